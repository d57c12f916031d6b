"""The data layer: which images (index), how to read them (images), demo data, and loaders.

See data/README.md for the dataset layouts a user can point catdog at.
"""

from catdog.data.datamodule import ImageDataModule, ImageDataset, LoaderSettings, build_transform
from catdog.data.demo import DEMO_CLASSES, ensure_demo_dataset, load_boxes
from catdog.data.images import IMAGE_EXTENSIONS, BadImageError, load_rgb, scan_images
from catdog.data.index import (
    LAYOUTS,
    SPLITS,
    absolute_path,
    assign_splits,
    build_index,
    class_names_of,
    index_for_inference,
    list_images,
)
from catdog.data.masks import (
    check_masks,
    find_masks,
    is_mask_file,
    load_mask,
    parse_mask_object,
    split_off_masks,
)

__all__ = [
    "DEMO_CLASSES",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "SPLITS",
    "BadImageError",
    "ImageDataModule",
    "ImageDataset",
    "LoaderSettings",
    "absolute_path",
    "assign_splits",
    "build_index",
    "build_transform",
    "check_masks",
    "class_names_of",
    "ensure_demo_dataset",
    "find_masks",
    "index_for_inference",
    "is_mask_file",
    "list_images",
    "load_boxes",
    "load_mask",
    "load_rgb",
    "parse_mask_object",
    "scan_images",
    "split_off_masks",
]
