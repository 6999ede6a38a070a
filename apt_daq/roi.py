"""Regions of interest: a cylinder along z (the paper's 25 nm ROI) and a box.

A foundation module (the run file's ``analysis.roi`` is checked before a run);
:mod:`apt_daq.analysis.roi` re-exports it.

Spec strings: ``"cylinder:D"`` (diameter D nm, axis along z through (0, 0): the reconstructed
specimen axis) or ``"cylinder:D,x,y"`` (axis through x, y), ``"box:WX,WY,WZ"`` (widths in nm,
centred on the axis and on the middle of the depth range) or ``"box:WX,WY,WZ,x,y,z"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from apt_daq.errors import UserError

#: the largest ROI number (size or centre), nm: 1 mm, a thousand times an APT specimen's width;
#: beyond it a value is a typo (1e308 squared is inf)
MAX_ROI_NM = 1e6


@dataclass(frozen=True)
class Roi:
    kind: str  # "cylinder" | "box"
    size_nm: tuple[float, ...]  # (diameter,) or (wx, wy, wz)
    centre_nm: tuple[float | None, float | None, float | None] = (0.0, 0.0, None)

    def mask(
        self, x: np.ndarray, y: np.ndarray, z: np.ndarray, z_mid: float | None = None
    ) -> np.ndarray:
        cx, cy, cz = self.centre_nm
        cx = cx or 0.0
        cy = cy or 0.0
        if self.kind == "cylinder":
            r = 0.5 * self.size_nm[0]
            return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
        wx, wy, wz = self.size_nm
        if cz is None:  # the middle of the depth range: of ``z`` unless given (``placed``)
            fin = z[np.isfinite(z)]
            cz = z_mid if z_mid is not None else (
                0.5 * float(fin.min() + fin.max()) if len(fin) else 0.0)
        return (np.abs(x - cx) <= wx / 2) & (np.abs(y - cy) <= wy / 2) & (np.abs(z - cz) <= wz / 2)

    @property
    def needs_depth(self) -> bool:
        """A box without a z centre: placed on the whole run's depth range (:meth:`placed`)."""
        return self.kind == "box" and self.centre_nm[2] is None

    def placed(self, z_lo_nm: float, z_hi_nm: float) -> Roi:
        """A box without a z centre centred on the middle of the depth range [lo, hi] of the
        whole run (a chunk's own middle is not the run's); anything else as it is."""
        if not self.needs_depth:
            return self
        cx, cy, _ = self.centre_nm
        mid = 0.5 * (z_lo_nm + z_hi_nm) if z_lo_nm <= z_hi_nm else 0.0
        return Roi(self.kind, self.size_nm, (cx, cy, mid))

    def spec(self) -> str:
        """The spec string :func:`parse_roi` reads back into this ROI."""
        nums = [*self.size_nm]
        cx, cy, cz = self.centre_nm
        if self.kind == "box" and cz is not None:
            nums += [cx or 0.0, cy or 0.0, cz]
        elif self.kind == "cylinder" and (cx or 0.0, cy or 0.0) != (0.0, 0.0):
            nums += [cx or 0.0, cy or 0.0]
        return f"{self.kind}:" + ",".join(f"{v:.6g}" for v in nums)

    def describe(self) -> str:
        """E.g. "cylinder 25 nm diameter along z", "... through (30, 0) nm" off the axis, "box
        10 x 10 x 20 nm", "... at (5, 0, -20) nm" off the axis' centre."""
        cx, cy, cz = self.centre_nm
        if self.kind == "cylinder":
            at = f" through ({cx:g}, {cy:g}) nm" if (cx or 0.0, cy or 0.0) != (0.0, 0.0) else ""
            return f"cylinder {self.size_nm[0]:g} nm diameter along z{at}"
        at = (f" at ({cx or 0.0:g}, {cy or 0.0:g}, {cz:g}) nm" if cz is not None
              else f" at ({cx:g}, {cy:g}) nm" if (cx or 0.0, cy or 0.0) != (0.0, 0.0) else "")
        return "box " + " x ".join(f"{s:g}" for s in self.size_nm) + f" nm{at}"


def parse_roi(spec: str | None) -> Roi | None:
    """Parse an ROI spec string (see module doc); None passes through. Raises UserError."""
    if spec is None or spec.strip().lower() in ("", "none", "all"):
        return None
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    try:
        nums = [float(v) for v in rest.split(",")] if rest else []
    except ValueError:
        raise UserError(f"ROI {spec!r}: numbers expected after '{kind}:'") from None
    if not all(math.isfinite(v) and abs(v) <= MAX_ROI_NM for v in nums):
        raise UserError(f"ROI {spec!r}: every number must be finite and within +-{MAX_ROI_NM:g} "
                        "nm (a specimen is under 1 um wide)")
    if kind == "cylinder" and len(nums) in (1, 3) and nums[0] > 0:
        centre = (nums[1], nums[2], None) if len(nums) == 3 else (0.0, 0.0, None)
        return Roi("cylinder", (nums[0],), centre)
    if kind == "box" and len(nums) in (3, 6) and min(nums[:3]) > 0:
        at: tuple[float | None, float | None, float | None] = (
            (nums[3], nums[4], nums[5]) if len(nums) == 6 else (0.0, 0.0, None))
        return Roi("box", tuple(nums[:3]), at)
    raise UserError(
        f"ROI {spec!r}: expected 'cylinder:DIAMETER_NM[,X,Y]' or 'box:WX,WY,WZ[,X,Y,Z]' (nm, > 0)"
    )
