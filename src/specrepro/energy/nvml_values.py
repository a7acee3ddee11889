"""NVML's answers as Python values: exception text, names (bytes in older pynvml), UUIDs,
field values and the driver's CUDA version."""

from __future__ import annotations

from typing import Any

# NVML_VALUE_TYPE_* (0..6) name these members of the c_nvmlValue_t union, in this order.
VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def as_str(value: Any) -> str:
    # Older pynvml releases return bytes for names and versions.
    return value.decode() if isinstance(value, bytes) else str(value)


def normalize_uuid(uuid: str) -> str:
    """'GPU-58e3...' (NVML) and '58e3...' (torch) name the same device."""
    text = uuid.strip().lower()
    for prefix in ("gpu-", "mig-"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def cuda_driver_version(nvml: Any) -> str | None:
    # The newest CUDA the driver supports, which differs from torch's runtime CUDA version.
    getter = getattr(nvml, "nvmlSystemGetCudaDriverVersion", None)
    if getter is None:
        return None
    try:
        raw = int(getter())
    except Exception:
        return None
    return f"{raw // 1000}.{(raw % 1000) // 10}"
