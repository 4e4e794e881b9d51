"""The explicit registry of feature methods: adding a method means one module and one line here."""

from __future__ import annotations

from lib.features.autoencoder import Autoencoder
from lib.features.base import FeatureMethod, MethodError
from lib.features.deepcluster import DeepCluster
from lib.features.raw import Raw
from lib.features.scan import ScanMethod
from lib.features.simclr import SimCLR
from lib.features.softtriple import SoftTriple
from lib.features.triplet import Triplet
from lib.features.voxnet import VoxNet
from lib.features.vrn import VRN

METHODS: dict[str, type[FeatureMethod]] = {
    "raw": Raw,
    "voxnet": VoxNet,
    "vrn": VRN,
    "autoencoder": Autoencoder,
    "deepcluster": DeepCluster,
    "triplet": Triplet,
    "softtriple": SoftTriple,
    "simclr": SimCLR,
    "scan": ScanMethod,
}


def get_method(name: str) -> type[FeatureMethod]:
    try:
        return METHODS[name]
    except KeyError:
        raise MethodError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}") from None
