"""The comparison report: one self-contained HTML file, a markdown summary and flat metric rows.

Input is the JSON form of a report (``lib.compare.records.Report.model_dump(mode="json")``, or a dict read
back from ``report.json``, old releases' included) plus the PNG bytes of the images it names. A report is
written at the end of a long run, so rendering never fails on missing parts.

Modules, one job each (import from them; this package re-exports nothing):

* ``lib.report.table``: the flat metric rows, their columns, the best method and number formatting.
* ``lib.report.html``: ``render_html``, from the jinja2 templates in ``lib/report/templates/`` (package data).
* ``lib.report.markdown``: ``render_markdown``, the short summary for a Prefect markdown artifact.
* ``lib.report.plots``: the PNG figures the report embeds.
* ``lib.report.previews``: the voxel grids of the 3D views, packed small enough to embed in the page.
"""
