{% raw %}/* voxclust report: sortable tables and the 3D views of cluster members. Inline, no library, no network. */
(function () {
  "use strict";

  /* ---- sortable tables: click (or Enter on) a header; numbers highest first, text A to Z; again reverses.
     Cells sort by their data-sort value; an empty one (a missing value, shown "–") always sorts last. */
  function sortTable(table, col) {
    var head = table.tHead.rows[0].cells, th = head[col];
    var numeric = th.classList.contains("num");
    var first = numeric ? "descending" : "ascending";
    var order = th.getAttribute("aria-sort") === first ? (numeric ? "ascending" : "descending") : first;
    for (var i = 0; i < head.length; i++) head[i].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", order);
    var sign = order === "ascending" ? 1 : -1, body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    function key(row) {
      var c = row.cells[col];
      var v = c ? c.getAttribute("data-sort") : "";
      if (v === null) v = c.textContent.trim();
      return v === "–" ? "" : v;
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === "" || y === "") return x === y ? 0 : (x === "" ? 1 : -1);
      if (numeric) return sign * (parseFloat(x) - parseFloat(y));
      return sign * x.localeCompare(y, undefined, { numeric: true, sensitivity: "base" });
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortTable(table, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, col); }
      });
    });
  });

  /* ---- 3D views: voxel grids ("R:base64" of zlib-compressed packed bits, C order, z up) drawn as shaded
     cube faces on a 2D canvas (painter's algorithm: far faces first), turned by dragging. */
  var source = document.getElementById("voxel-grids");
  var grids = source ? JSON.parse(source.textContent) : {};
  var shapes = {};
  var DIRS = [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]];

  function inflate(bytes) {
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer();
  }
  function shape(id) {
    if (shapes[id]) return shapes[id];
    var text = grids[id];
    if (typeof text !== "string") return Promise.reject(new Error("no grid for this item"));
    if (typeof DecompressionStream === "undefined") return Promise.reject(new Error("this browser is too old"));
    var colon = text.indexOf(":"), r = parseInt(text.slice(0, colon), 10), bin = atob(text.slice(colon + 1));
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    shapes[id] = inflate(bytes).then(function (buf) { return faces(r, new Uint8Array(buf)); });
    return shapes[id];
  }
  function faces(r, bits) {
    function occ(x, y, z) {
      if (x < 0 || y < 0 || z < 0 || x >= r || y >= r || z >= r) return 0;
      var i = (x * r + y) * r + z;
      return (bits[i >> 3] >> (7 - (i & 7))) & 1;
    }
    var vox = [], dir = [], lo = [r, r, r], hi = [-1, -1, -1];
    for (var x = 0; x < r; x++) for (var y = 0; y < r; y++) for (var z = 0; z < r; z++) {
      if (!occ(x, y, z)) continue;
      var p = [x, y, z];
      for (var a = 0; a < 3; a++) { lo[a] = Math.min(lo[a], p[a]); hi[a] = Math.max(hi[a], p[a]); }
      for (var d = 0; d < 6; d++) {
        if (!occ(x + DIRS[d][0], y + DIRS[d][1], z + DIRS[d][2])) { vox.push(x, y, z); dir.push(d); }
      }
    }
    var centre = [0, 1, 2].map(function (a) { return hi[a] >= 0 ? (lo[a] + hi[a]) / 2 : (r - 1) / 2; });
    var radius = Math.max(1, 0.5 * Math.hypot(hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1));
    return { n: dir.length, vox: new Float32Array(vox), dir: new Uint8Array(dir), centre: centre, radius: radius };
  }

  var YAW = -0.6, PITCH = 0.4;
  /* towards the light, in view terms (right, up, depth): from the upper left, in front */
  var LIGHT = (function () {
    var l = [-0.45, 0.6, -0.66], n = Math.hypot(l[0], l[1], l[2]);
    return l.map(function (v) { return v / n; });
  })();

  function View(canvas, note) {
    this.canvas = canvas; this.note = note; this.shape = null; this.yaw = YAW; this.pitch = PITCH; this.queued = false;
    var self = this, last = null;
    canvas.addEventListener("pointerdown", function (e) { last = [e.clientX, e.clientY]; canvas.setPointerCapture(e.pointerId); });
    canvas.addEventListener("pointermove", function (e) {
      if (!last) return;
      self.turn((e.clientX - last[0]) * 0.01, (e.clientY - last[1]) * 0.01);
      last = [e.clientX, e.clientY];
    });
    canvas.addEventListener("pointerup", function () { last = null; });
    canvas.addEventListener("pointercancel", function () { last = null; });
    canvas.addEventListener("dblclick", function () { self.yaw = YAW; self.pitch = PITCH; self.request(); });
    canvas.addEventListener("keydown", function (e) {
      var k = { ArrowLeft: [-0.15, 0], ArrowRight: [0.15, 0], ArrowUp: [0, -0.15], ArrowDown: [0, 0.15] }[e.key];
      if (k) { e.preventDefault(); self.turn(k[0], k[1]); }
    });
  }
  View.prototype.turn = function (dyaw, dpitch) {
    this.yaw += dyaw;
    this.pitch = Math.max(-1.5, Math.min(1.5, this.pitch + dpitch));
    this.request();
  };
  View.prototype.request = function () {
    var self = this;
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(function () { self.queued = false; self.draw(); });
  };
  View.prototype.draw = function () {
    var c = this.canvas, s = this.shape, ratio = window.devicePixelRatio || 1;
    var w = Math.round((c.clientWidth || 320) * ratio), h = Math.round((c.clientHeight || 320) * ratio);
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    var ctx = c.getContext("2d");
    ctx.fillStyle = "#f4f6f8";
    ctx.fillRect(0, 0, w, h);
    if (!s) return;
    var cy = Math.cos(this.yaw), sy = Math.sin(this.yaw), cp = Math.cos(this.pitch), sp = Math.sin(this.pitch);
    function project(x, y, z) { /* world (x right, y away, z up) -> [right, up, depth away from the eye] */
      var x1 = x * cy - y * sy, y1 = x * sy + y * cy;
      return [x1, y1 * sp + z * cp, y1 * cp - z * sp];
    }
    var scale = 0.47 * Math.min(w, h) / s.radius, grow = 0.5 * (1 + 1.2 / Math.max(scale, 1));
    var info = DIRS.map(function (n) {
      var pn = project(n[0], n[1], n[2]);
      var a = n[0] ? 1 : 0, b = n[2] ? 1 : 2; /* the two axes across the face */
      var u = [0, 0, 0], v = [0, 0, 0];
      u[a] = grow; v[b] = grow;
      var corners = [[1, 1], [1, -1], [-1, -1], [-1, 1]].map(function (k) {
        var q = project(0.5 * n[0] + k[0] * u[0] + k[1] * v[0], 0.5 * n[1] + k[0] * u[1] + k[1] * v[1], 0.5 * n[2] + k[0] * u[2] + k[1] * v[2]);
        return [q[0] * scale, -q[1] * scale];
      });
      var light = 0.35 + 0.65 * Math.max(0, pn[0] * LIGHT[0] + pn[1] * LIGHT[1] + pn[2] * LIGHT[2]);
      return { visible: pn[2] < -1e-6, depth: 0.5 * pn[2], corners: corners, light: light };
    });
    var depth = new Float32Array(s.n), px = new Float32Array(s.n), py = new Float32Array(s.n), order = [];
    var cx = s.centre[0], cyy = s.centre[1], cz = s.centre[2];
    for (var f = 0; f < s.n; f++) {
      var d = info[s.dir[f]];
      if (!d.visible) continue;
      var p = project(s.vox[3 * f] - cx, s.vox[3 * f + 1] - cyy, s.vox[3 * f + 2] - cz);
      px[f] = w / 2 + p[0] * scale; py[f] = h / 2 - p[1] * scale; depth[f] = p[2] + d.depth;
      order.push(f);
    }
    order.sort(function (a, b) { return depth[b] - depth[a]; });
    var near = -s.radius, span = 2 * s.radius, styles = {};
    for (var k = 0; k < order.length; k++) {
      var g = order[k], di = s.dir[g], e = info[di], o = e.corners, x = px[g], y = py[g];
      var fog = Math.max(0, Math.min(31, Math.floor(32 * (depth[g] - near) / span))); /* farther: darker */
      var key = di * 32 + fog;
      var style = styles[key];
      if (!style) {
        var t = e.light * (1 - 0.012 * fog);
        style = styles[key] = "rgb(" + Math.round(140 * t) + "," + Math.round(190 * t) + "," + Math.round(255 * t) + ")";
      }
      ctx.fillStyle = style;
      ctx.beginPath();
      ctx.moveTo(x + o[0][0], y + o[0][1]);
      ctx.lineTo(x + o[1][0], y + o[1][1]);
      ctx.lineTo(x + o[2][0], y + o[2][1]);
      ctx.lineTo(x + o[3][0], y + o[3][1]);
      ctx.closePath();
      ctx.fill();
    }
    c.setAttribute("data-faces", String(order.length));
  };
  View.prototype.show = function (el) {
    var self = this, id = el.textContent, cluster = el.closest("tr").cells[0].textContent;
    this.note.textContent = "loading " + id + " …";
    return shape(id).then(function (s) {
      self.shape = s;
      self.draw();
      self.canvas.setAttribute("data-item", id);
      self.note.textContent = id + " (cluster " + cluster + "): drag to turn, double-click to reset.";
    }, function (err) {
      self.shape = null;
      self.draw();
      self.note.textContent = id + ": no 3D view (" + err.message + ").";
    });
  };

  Array.prototype.forEach.call(document.querySelectorAll("section"), function (section) {
    var canvas = section.querySelector(".view3d canvas"), items = section.querySelectorAll(".item.view");
    if (!canvas || !items.length) return;
    var view = new View(canvas, section.querySelector(".view3d p"));
    function pick(el) {
      Array.prototype.forEach.call(items, function (i) { i.classList.toggle("current", i === el); });
      view.show(el);
    }
    Array.prototype.forEach.call(items, function (el) {
      el.setAttribute("role", "button");
      el.addEventListener("click", function () { pick(el); });
      el.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(el); }
      });
    });
    pick(items[0]);
  });
})();
{% endraw %}
