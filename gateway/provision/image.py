"""Write a bundle into the FAT boot partition of a Raspberry Pi OS image file: no root, no loop device.

The partition is found in the image's MBR; mtools (``mcopy -i IMAGE@@OFFSET``) writes into it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.provision.bundle import BUNDLE_DIR, Bundle, write_bundle
from gateway.provision.errors import ProvisionError

SECTOR = 512
_FAT_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}  # FAT12, FAT16 (<32M, CHS, LBA), FAT32 (CHS, LBA)
_GPT_PROTECTIVE = 0xEE


@dataclass(frozen=True)
class Partition:
    """One primary MBR partition."""

    index: int  # 1-based, as in /dev/mmcblk0p1
    type: int
    start: int  # bytes from the start of the image
    size: int  # bytes


def read_partitions(image: Path) -> list[Partition]:
    """Parse the four primary entries of the image's MBR (empty entries skipped)."""
    with image.open("rb") as f:
        mbr = f.read(SECTOR)
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise ProvisionError(f"{image}: no MBR partition table (is it a raw .img, not .img.xz?)")
    partitions = []
    for index in range(4):
        entry = mbr[446 + 16 * index : 446 + 16 * (index + 1)]
        ptype = entry[4]
        first_lba, sectors = struct.unpack_from("<II", entry, 8)
        if ptype and sectors:
            partitions.append(Partition(index + 1, ptype, first_lba * SECTOR, sectors * SECTOR))
    return partitions


def boot_partition(image: Path) -> Partition:
    """The first FAT partition: the boot partition (/boot/firmware) of a Raspberry Pi OS image."""
    partitions = read_partitions(image)
    if any(p.type == _GPT_PROTECTIVE for p in partitions):
        raise ProvisionError(f"{image}: GPT images are not supported (Raspberry Pi OS images use MBR)")
    for partition in partitions:
        if partition.type in _FAT_TYPES:
            if partition.start + partition.size > image.stat().st_size:
                raise ProvisionError(f"{image}: partition {partition.index} extends past the end of the file")
            return partition
    types = ", ".join(f"0x{p.type:02x}" for p in partitions) or "none"
    raise ProvisionError(f"{image}: no FAT partition in the MBR (partition types: {types})")


def write_bundle_to_image(bundle: Bundle, image: Path) -> Partition:
    """Copy ``bundle`` into the image's boot partition, replacing an earlier bundle; return the partition."""
    partition = boot_partition(image)
    target = _target(image, partition)
    with tempfile.TemporaryDirectory(prefix="hydro-gateway-bundle-") as staging:
        write_bundle(bundle, Path(staging))
        if _mtools(["mdir", "-b", "-i", target, f"::/{BUNDLE_DIR}"], check=False).returncode == 0:
            _mtools(["mdeltree", "-i", target, f"::/{BUNDLE_DIR}"])
        sources = sorted(str(p) for p in Path(staging).iterdir())
        _mtools(["mcopy", "-s", "-o", "-i", target, *sources, "::/"])
    return partition


def read_file_from_image(image: Path, name: str) -> bytes:
    """Read one file (path relative to the partition root) from the image's boot partition."""
    return _mtools(["mtype", "-i", _target(image, boot_partition(image)), f"::/{name}"]).stdout


def _target(image: Path, partition: Partition) -> str:
    """mtools' ``-i`` argument for a partition inside an image file."""
    return f"{image}@@{partition.start}"


def _mtools(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run an mtools command; a failure becomes a ProvisionError with mtools' message."""
    # The image is not a floppy: skip mtools' geometry sanity check.
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    try:
        result = subprocess.run(argv, capture_output=True, env=env, check=False)
    except FileNotFoundError as exc:
        raise ProvisionError("mtools is not installed (apt-get install mtools)") from exc
    if check and result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise ProvisionError(f"{argv[0]} failed on the image: {message}")
    return result
