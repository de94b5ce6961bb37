"""``hydro-gateway provision --image``: the bundle lands in the FAT boot partition of a disk image file."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.provision.errors import ProvisionError
from gateway.provision.image import boot_partition, read_file_from_image, read_partitions
from tests.deploy.conftest import one_host_inventory, provision

# The image is not a floppy: skip mtools' geometry sanity check.
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
MIB = 1024 * 1024
BOOT_START = 4 * MIB  # Raspberry Pi OS puts the boot partition at sector 8192
BOOT_SIZE = 40 * MIB  # enough clusters for FAT32
ROOT_SIZE = 8 * MIB


def mbr_entry(ptype: int, start: int, size: int) -> bytes:
    """A primary partition entry (LBA fields only; CHS left zero as modern tools read LBA)."""
    return struct.pack("<B3sB3sII", 0, b"\0\0\0", ptype, b"\0\0\0", start // 512, size // 512)


def make_pi_image(path: Path) -> Path:
    """A sparse disk image shaped like Raspberry Pi OS: FAT32 boot (type 0x0c) + Linux root (0x83)."""
    with path.open("wb") as f:
        f.truncate(BOOT_START + BOOT_SIZE + ROOT_SIZE)
        table = mbr_entry(0x0C, BOOT_START, BOOT_SIZE) + mbr_entry(0x83, BOOT_START + BOOT_SIZE, ROOT_SIZE)
        f.seek(446)
        f.write(table + bytes(32) + b"\x55\xaa")
    subprocess.run(
        ["mkfs.fat", "-F", "32", "-n", "bootfs", f"--offset={BOOT_START // 512}", str(path), str(BOOT_SIZE // 1024)],
        check=True, capture_output=True,
    )
    stock = path.parent / "stock"
    stock.mkdir()
    (stock / "config.txt").write_text("dtparam=audio=on\n")
    (stock / "user-data").write_text("#cloud-config\n# stock template\n")
    for name in ("config.txt", "user-data"):
        subprocess.run(
            ["mcopy", "-i", f"{path}@@{BOOT_START}", str(stock / name), "::/"],
            check=True, capture_output=True, env=MTOOLS_ENV,
        )
    return path


def mtype(image: Path, name: str) -> str:
    """Read a file back from the boot partition with mtools, independently of the code under test."""
    result = subprocess.run(
        ["mtype", "-i", f"{image}@@{BOOT_START}", f"::/{name}"], capture_output=True, text=True, env=MTOOLS_ENV
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def mdir(image: Path, name: str) -> list[str]:
    """Bare listing of a directory on the boot partition."""
    result = subprocess.run(
        ["mdir", "-b", "-i", f"{image}@@{BOOT_START}", f"::/{name}"], capture_output=True, text=True, env=MTOOLS_ENV
    )
    assert result.returncode == 0, result.stderr
    return sorted(line.rsplit("/", 1)[-1] for line in result.stdout.split())


def provision_into(tmp_path: Path, image: Path, *more: str | Path, port: int = 8080) -> int:
    inventory, secrets = one_host_inventory(tmp_path, "gh-0042", hydro_gateway_web_port=port)
    return provision("-i", inventory, "--host", "gh-0042", "-e", secrets, "--image", image, *more)


def test_boot_partition_is_found_in_the_mbr(tmp_path: Path) -> None:
    image = make_pi_image(tmp_path / "pi.img")
    assert [(p.index, p.type) for p in read_partitions(image)] == [(1, 0x0C), (2, 0x83)]
    boot = boot_partition(image)
    assert (boot.start, boot.size) == (BOOT_START, BOOT_SIZE)


def test_bundle_is_written_into_the_boot_partition(tmp_path: Path) -> None:
    image = make_pi_image(tmp_path / "pi.img")
    assert provision_into(tmp_path, image) == 0

    assert mtype(image, "user-data").startswith("#cloud-config\n# First boot of hydro-gateway gw-gh-0042")
    assert yaml.safe_load(mtype(image, "meta-data"))["local-hostname"] == "gh-0042"
    assert "eth0" in mtype(image, "network-config")
    assert 'id = "gw-gh-0042"' in mtype(image, "hydro-gateway/gateway.toml")
    assert mtype(image, "hydro-gateway/secrets/upstream_token") == "upstream-token-0001"
    assert mtype(image, "hydro-gateway/firstboot.sh").startswith("#!/bin/bash\n")
    assert mdir(image, "hydro-gateway/secrets") == ["admin_token", "mqtt_passwords", "upstream_token"]
    # The image's own files are left alone: firstboot.sh edits config.txt on the Pi.
    assert mtype(image, "config.txt") == "dtparam=audio=on\n"
    assert read_file_from_image(image, "hydro-gateway/gateway.toml").decode() == mtype(
        image, "hydro-gateway/gateway.toml"
    )


def test_reprovisioning_an_image_replaces_the_old_bundle(tmp_path: Path) -> None:
    image = make_pi_image(tmp_path / "pi.img")
    wheel = tmp_path / "hydro_gateway-1.0.0-py3-none-any.whl"
    wheel.write_bytes(b"old wheel")
    assert provision_into(tmp_path, image, "--wheel", wheel) == 0
    assert "hydro_gateway-1.0.0-py3-none-any.whl" in mdir(image, "hydro-gateway/wheels")
    old_id = yaml.safe_load(mtype(image, "meta-data"))["instance-id"]

    assert provision_into(tmp_path, image, port=9090) == 0
    assert "wheels" not in mdir(image, "hydro-gateway")
    assert "port = 9090" in mtype(image, "hydro-gateway/gateway.toml")
    assert yaml.safe_load(mtype(image, "meta-data"))["instance-id"] != old_id


def test_files_without_an_mbr_are_refused(tmp_path: Path) -> None:
    image = tmp_path / "raspios.img.xz"
    image.write_bytes(b"\xfd7zXZ\0" + bytes(1024))
    with pytest.raises(ProvisionError, match="no MBR partition table"):
        boot_partition(image)


def test_gpt_and_fatless_images_are_refused(tmp_path: Path) -> None:
    for ptype, message in ((0xEE, "GPT images are not supported"), (0x83, "no FAT partition")):
        image = tmp_path / f"disk-{ptype:x}.img"
        with image.open("wb") as f:
            f.truncate(2 * MIB)
            f.seek(446)
            f.write(mbr_entry(ptype, MIB, MIB) + bytes(48) + b"\x55\xaa")
        with pytest.raises(ProvisionError, match=message):
            boot_partition(image)


def test_cli_reports_a_bad_image_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "empty.img"
    image.write_bytes(bytes(4096))
    assert provision_into(tmp_path, image) == 2
    assert "no MBR partition table" in capsys.readouterr().err
