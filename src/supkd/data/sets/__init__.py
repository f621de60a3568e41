"""The data sets, one file each; importing this package registers them (in this order:
the order ``DATASETS`` lists them in)."""

# isort: off
from supkd.data.sets import digits, cifar, jpeg_pack, imagefolder
# isort: on

__all__ = ["cifar", "digits", "imagefolder", "jpeg_pack"]
