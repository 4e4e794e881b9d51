"""Feature methods behind one interface (:mod:`lib.features.base`), one module each, one registry
(:mod:`lib.features.registry`), trained and embedded by the run engine (:mod:`lib.features.runs`)."""

import faiss  # noqa: F401  (import faiss before torch: some builds crash the other way round)
