"""Compare feature methods on one voxel store: train (or reuse) each method's run, embed every item, cluster,
score, draw, and write one report next to the store.

A comparison is a list of :class:`MethodEntry` (a row name, a registered method, its options). Each entry's
run lives at ``<store>/runs/<name>-<hash of method and options>``, so running a comparison again, or the
quality benchmark on the same store, reuses every finished run instead of training it again; a changed
option means another run.

Modules, one job each (import from them; this package re-exports nothing):

* ``rows``: the entries, presets and clustering options, and where each entry's run lives;
* ``evaluate``: one method scored (:func:`lib.evaluation.score.score_embedding`) into a ``MethodResult``;
* ``figures``: that method's pictures;
* ``records``: ``MethodResult`` and ``Report``, validated when written and when read back;
* ``publish``: the report folder (``report.json``, ``report.html``, ``assignments.csv``, ``latest.json``).

Per method (``evaluate.evaluate_method``), with no labels involved until scoring:

* the run's embedding of every stored item (``all``), recomputed only when the store or the run changed;
* PCA to ``pca_dim`` when wider (whitening and row L2-normalisation optional, off by default), then faiss
  k-means on **all** items with ``k`` = the configured k, else the number of classes when the store has
  labels, else the method's suggested k (knee of its elbow curve); k-means on all items rather than per
  split because a user groups the whole batch, and the assignment of every item is written out;
* an elbow sweep (inertia over k = 2 .. ``elbow_k_max``) and its knee;
* PIC (power iteration clustering, no k) on the PCA-whitened, L2-normalised features, as in DeepCluster;
* metrics per split when the store has splits (and for ``all``): cluster sizes, inertia, silhouette on a
  seeded sample and, on labelled rows, NMI / ARI / Hungarian accuracy / purity / the contingency table;
* pictures: the contingency heat map (scored split), PCA and t-SNE maps coloured by label and by cluster
  (t-SNE on a seeded sample of at most ``tsne_max_points``), and a strip of thumbnails per cluster (the
  members nearest the centroid).

``publish.publish`` then draws the shared plots (elbow curves, loss curves, DeepCluster's NMI per epoch),
writes ``report.json``, a self-contained ``report.html`` and ``assignments.csv`` under
``<store>/reports/<id>/`` and points ``<store>/reports/latest.json`` at it. A method that failed (to
train, or with NaNs in its embedding, or with fewer items than k) gets a record with its error and the rest
of the report is produced.
"""
