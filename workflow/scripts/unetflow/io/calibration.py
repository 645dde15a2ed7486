"""The pixel size TIFFs state, read and written again: ImageJ's (resolution tags in pixels per its unit, the slice
spacing), OME-TIFF's (PhysicalSizeX/Y/Z in their units) and the TIFF resolution tags (pixels per inch or centimetre).

Masks written for a TIFF carry its image's pixel size (`calibration`, `calibrated`), as Fiji and QuPath read it;
pixel sizes are compared in µm (`stated_pixel_size`).
"""

import xml.etree.ElementTree as ElementTree

import numpy as np
import tifffile

from unetflow.io.formats import format_suffix

# µm per unit, as OME and ImageJ name units (Fiji writes µm as the seven characters \u00B5m)
MICRONS = {"µm": 1.0, "μm": 1.0, "um": 1.0, "\\u00B5m": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
           "micrometre": 1.0, "nm": 1e-3, "Å": 1e-4, "pm": 1e-6, "mm": 1e3, "cm": 1e4, "m": 1e6}
PRINT_PIXEL = 20.0  # µm: resolution tags of coarser pixels (under 1270 dpi) are a print setting, not a pixel size
UNIT_MICRONS = {2: 25400.0, 3: 10000.0}  # µm per TIFF ResolutionUnit: inch, centimetre
CENTIMETER = 3  # the TIFF ResolutionUnit
PIXEL_SIZE_TOLERANCE = 0.1  # pixel sizes this share apart are named as different
_READ_ERRORS = (ValueError, OSError, EOFError, IndexError, KeyError, tifffile.TiffFileError, ElementTree.ParseError)


def ome_pixel_sizes(xml: str, axes: str = "XY") -> list[float]:
    """PhysicalSize<axis> of the first OME image in µm, for each of `axes` where given."""
    pixels = next((node for node in ElementTree.fromstring(xml).iter() if node.tag.endswith("Pixels")), None)
    if pixels is None:
        return []
    sizes = []
    for axis in axes:
        value, unit = pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "µm")
        if value is not None and unit in MICRONS:
            sizes.append(float(value) * MICRONS[unit])
    return sizes


def ome_calibration(xml: str) -> dict:
    """An OME-TIFF's pixel size as `calibration` gives it (in µm: unit 'micron'); {} without PhysicalSizeX."""
    plane = ome_pixel_sizes(xml)
    if not plane:
        return {}
    depth = ome_pixel_sizes(xml, "Z")
    return dict(resolution=(1 / plane[0], 1 / plane[-1]), unit="micron") | (dict(spacing=depth[0]) if depth else {})


def calibration(path) -> dict:
    """The pixel size a TIFF states: resolution (pixels per unit along x, y) with, of ImageJ and OME files, the unit
    (a name) and the slice spacing where given (of ImageJ files also the frame interval and the stack's axis, T or
    Z), of others the TIFF resolution unit (code); {} when it states none (or is no TIFF, or cannot be read: reading
    its pixels reports why; none given). Files of other suffixes are not opened."""
    if path is None or format_suffix(path) not in (".tif", ".tiff"):
        return {}
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome:
                return ome_calibration(tif.ome_metadata)
            page, meta = tif.pages.first, tif.imagej_metadata or {}
            if "XResolution" not in page.tags:
                return {}
            if tif.is_imagej and meta.get("unit", "pixel") != "pixel":  # 1 pixel per unit is a size too
                stated = {key: meta[key] for key in ("unit", "spacing", "finterval") if key in meta}
                return dict(resolution=page.resolution, axis="T" if "T" in tif.series[0].axes else "Z", **stated)
            if page.resolution == (1, 1):
                return {}
            return dict(resolution=page.resolution, resolutionunit=int(page.resolutionunit))
    except _READ_ERRORS:
        return {}


def calibrated(pixel_size: dict, array: np.ndarray, axes: str) -> dict:
    """tifffile.imwrite keywords that write a `calibration`'s pixel size with an `array` of `axes` (ZYX or YX): as
    an ImageJ file (its unit and spacing, as Fiji reads them) where ImageJ holds the array (8/16-bit, 32-bit float),
    else as the resolution tags (32-bit ids: in pixels per centimetre)."""
    if "unit" in pixel_size and array.dtype in (np.uint8, np.uint16, np.float32):
        stated = {key: pixel_size[key] for key in ("unit", "spacing", "finterval") if key in pixel_size}
        metadata = {"axes": axes.replace("Z", pixel_size.get("axis", "Z")), **stated}  # a time-lapse's frames: T
        return dict(imagej=True, resolution=pixel_size["resolution"], metadata=metadata)
    microns = MICRONS.get(pixel_size.get("unit"))
    if microns:
        return dict(resolution=tuple(size * UNIT_MICRONS[CENTIMETER] / microns for size in pixel_size["resolution"]),
                    resolutionunit=CENTIMETER)
    if not pixel_size:
        return {}
    return dict(resolution=pixel_size["resolution"], resolutionunit=pixel_size.get("resolutionunit", 1))  # 1: none


def stated_pixel_size(path, axis: int = 0) -> float | None:
    """The pixel width (`axis` 0; its height: 1) in µm a TIFF states in a unit of length: ImageJ and OME units,
    resolution tags in centimetres of pixels under PRINT_PIXEL (not in inches, nor 300 dpi in centimetres: print
    settings of photos); None otherwise."""
    stated = calibration(path)
    if "unit" in stated:
        microns = MICRONS.get(stated["unit"])
        return microns / stated["resolution"][axis] if microns else None
    if stated.get("resolutionunit") != CENTIMETER:
        return None
    size = UNIT_MICRONS[CENTIMETER] / stated["resolution"][axis]
    return size if size < PRINT_PIXEL else None


def stated_pixel_sizes(paths, axis: int = 0) -> dict[str, float]:
    """{path: its `stated_pixel_size` along `axis`} of the TIFFs among `paths` that state one."""
    return {path: size for path in dict.fromkeys(map(str, paths)) if (size := stated_pixel_size(path, axis))}


def typical_pixel_size(sizes) -> float:
    """The lower median of pixel sizes: a size one of them has (of 0.1 and 0.2 µm in equal numbers, 0.1)."""
    return float(np.sort(list(sizes))[(len(sizes) - 1) // 2])
