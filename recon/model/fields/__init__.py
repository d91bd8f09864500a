"""Density fields behind one interface (:class:`Field`): hash grid, voxel grid, coordinate MLPs, TensoRF.

The MLPs: SIREN, Fourier features + ReLU, Gaussian activations, split activations (SplitNet);
TensoRF: a vector–matrix factorised grid; MulFAGrid: a feature grid with a learned interpolation kernel.

:func:`make_field` builds one from a :class:`FieldConfig`; each kind lives in its own module.
"""

from recon.model.fields.base import Field, box_grid, sample_field
from recon.model.fields.config import ACTIVATIONS, FIELD_KINDS, FieldConfig
from recon.model.fields.fourier import FourierFeatureField
from recon.model.fields.gauss import GaussianMLPField
from recon.model.fields.hashgrid import HashGridField
from recon.model.fields.mulfagrid import MulFAGridField
from recon.model.fields.registry import make_field
from recon.model.fields.siren import SirenField
from recon.model.fields.splitnet import SplitNetField
from recon.model.fields.tensorf import TensoRFField
from recon.model.fields.voxel import VoxelField

__all__ = [
    "ACTIVATIONS",
    "FIELD_KINDS",
    "Field",
    "FieldConfig",
    "FourierFeatureField",
    "GaussianMLPField",
    "HashGridField",
    "MulFAGridField",
    "SirenField",
    "SplitNetField",
    "TensoRFField",
    "VoxelField",
    "box_grid",
    "make_field",
    "sample_field",
]
