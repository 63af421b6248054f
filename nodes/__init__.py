"""ComfyUI node classes: thin adapters over ``fantasytalking_core``.

``NODE_CLASS_MAPPINGS`` grows as node modules land; see README.md for the node list.
"""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
