"""Distinct colours for drawing instances."""
import colorsys

import numpy as np

__all__ = ["instance_colors"]

# Hues stepped by the golden ratio spread any number of colours around the wheel with no two
# neighbours close; alternating value and saturation separates colours whose hues do come close.
_GOLDEN_RATIO = (5 ** 0.5 - 1) / 2


def instance_colors(n: int, offset: int = 0) -> np.ndarray:
    """`n` bright, well-separated RGB colours, the same for the same (n, offset).

    Args:
        n: number of colours.
        offset: index of the first colour in the infinite sequence (to keep one colour per class,
            pass the class index with n=1).

    Returns:
        `ndarray[n, 3]` uint8 RGB.
    """
    colors = []
    for i in range(offset, offset + n):
        hue = (0.1 + i * _GOLDEN_RATIO) % 1.0
        saturation = (0.9, 0.65)[i % 2]
        value = (0.95, 0.8, 1.0)[i % 3]
        colors.append(colorsys.hsv_to_rgb(hue, saturation, value))
    return (np.asarray(colors, dtype=np.float64).reshape(-1, 3) * 255).round().astype(np.uint8)
