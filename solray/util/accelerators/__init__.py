"""`ray.util.accelerators`: Ray's names for accelerator types, the strings a
node advertises as `accelerator_type:<value>` and tasks and actors ask for
with `accelerator_type=` (for example `accelerator_type=NVIDIA_TESLA_V100`).
The names and values are Ray's, as data, so code written against Ray's
constants schedules the same way.

Ray's `tpu` submodule is not here: its helpers read Google Cloud's metadata
server, and solray makes no calls to cloud services.
"""

from __future__ import annotations

import warnings

NVIDIA_TESLA_V100 = "V100"
NVIDIA_TESLA_P100 = "P100"
NVIDIA_TESLA_T4 = "T4"
NVIDIA_TESLA_P4 = "P4"
NVIDIA_TESLA_K80 = "K80"
NVIDIA_TESLA_A10G = "A10G"
NVIDIA_L4 = "L4"
NVIDIA_L40S = "L40S"
NVIDIA_A100 = "A100"
NVIDIA_H100 = "H100"
NVIDIA_H200 = "H200"
NVIDIA_H20 = "H20"
INTEL_MAX_1550 = "Intel-GPU-Max-1550"
INTEL_MAX_1100 = "Intel-GPU-Max-1100"
INTEL_GAUDI = "Intel-GAUDI"
AMD_INSTINCT_MI100 = "AMD-Instinct-MI100"
AMD_INSTINCT_MI250x = "AMD-Instinct-MI250X"
AMD_INSTINCT_MI250 = "AMD-Instinct-MI250X-MI250"
AMD_INSTINCT_MI210 = "AMD-Instinct-MI210"
AMD_INSTINCT_MI300x = "AMD-Instinct-MI300X-OAM"
AMD_RADEON_R9_200_HD_7900 = "AMD-Radeon-R9-200-HD-7900"
AMD_RADEON_HD_7900 = "AMD-Radeon-HD-7900"
AWS_NEURON_CORE = "aws-neuron-core"
GOOGLE_TPU_V2 = "TPU-V2"
GOOGLE_TPU_V3 = "TPU-V3"
GOOGLE_TPU_V4 = "TPU-V4"
GOOGLE_TPU_V5P = "TPU-V5P"
GOOGLE_TPU_V5LITEPOD = "TPU-V5LITEPOD"
GOOGLE_TPU_V6E = "TPU-V6E"
HUAWEI_NPU_910B = "Ascend910B"
HUAWEI_NPU_910B4 = "Ascend910B4"
# Sizes of A100: nodes do not advertise these by themselves (as in Ray);
# give them with `resources={"accelerator_type:A100-40G": 1}`.
NVIDIA_A100_40G = "A100-40G"
NVIDIA_A100_80G = "A100-80G"

__all__ = [
    "NVIDIA_TESLA_V100",
    "NVIDIA_TESLA_P100",
    "NVIDIA_TESLA_T4",
    "NVIDIA_TESLA_P4",
    "NVIDIA_TESLA_K80",
    "NVIDIA_TESLA_A10G",
    "NVIDIA_L4",
    "NVIDIA_L40S",
    "NVIDIA_A100",
    "NVIDIA_H100",
    "NVIDIA_H200",
    "NVIDIA_H20",
    "NVIDIA_A100_40G",
    "NVIDIA_A100_80G",
    "INTEL_MAX_1550",
    "INTEL_MAX_1100",
    "INTEL_GAUDI",
    "AMD_INSTINCT_MI100",
    "AMD_INSTINCT_MI210",
    "AMD_INSTINCT_MI250",
    "AMD_INSTINCT_MI250x",
    "AMD_INSTINCT_MI300x",
    "AMD_RADEON_R9_200_HD_7900",
    "AMD_RADEON_HD_7900",
    "AWS_NEURON_CORE",
    "GOOGLE_TPU_V2",
    "GOOGLE_TPU_V3",
    "GOOGLE_TPU_V4",
    "GOOGLE_TPU_V5P",
    "GOOGLE_TPU_V5LITEPOD",
    "GOOGLE_TPU_V6E",
    "HUAWEI_NPU_910B",
    "HUAWEI_NPU_910B4",
    # Deprecated, as in Ray:
    "NVIDIA_TESLA_A100",
]


def __getattr__(name: str):
    if name == "NVIDIA_TESLA_A100":  # Ray's deprecated name, with Ray's warning
        warnings.warn(
            "NVIDIA_TESLA_A100 is deprecated, use NVIDIA_A100 instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return NVIDIA_A100
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
