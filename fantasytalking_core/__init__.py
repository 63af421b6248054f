"""FantasyTalking on Wan2.1, in pure PyTorch.

This package never imports ComfyUI. Submodules are imported on demand so that importing the
package costs nothing.
"""

__version__ = "0.1.0"
