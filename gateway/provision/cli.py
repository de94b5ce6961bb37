"""``hydro-gateway provision``: build one greenhouse's first-boot bundle from the fleet inventory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.provision.errors import ProvisionError


def add_subparser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``provision`` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "provision",
        help="build a greenhouse's SD card first-boot bundle from the fleet inventory",
        description=(
            "Build the first-boot bundle (gateway.toml, secrets, firstboot.sh, cloud-init user-data, "
            "network-config, meta-data) for one inventory host, into a directory and/or the boot "
            "partition of a Raspberry Pi OS image file. See docs/deploy.md."
        ),
    )
    parser.add_argument("--inventory", "-i", type=Path, required=True, help="Ansible YAML inventory")
    parser.add_argument("--host", required=True, help="inventory host name of the greenhouse gateway")
    parser.add_argument("--vault-password-file", type=Path, help="password file for ansible-vault files")
    parser.add_argument(
        "--extra-vars", "-e", type=Path, action="append", default=[], metavar="FILE",
        help="YAML vars file applied last, like ansible-playbook -e @FILE (repeatable)",
    )
    parser.add_argument(
        "--wheel", type=Path, action="append", default=[], metavar="WHL",
        help="wheel to bundle: the hydro_gateway wheel, plus dependency wheels for an offline install",
    )
    parser.add_argument(
        "--offline", action="store_true", help="install from the bundled wheels only (no package index)"
    )
    parser.add_argument("--out", type=Path, help="write the bundle into this directory (or mounted boot fs)")
    parser.add_argument("--image", type=Path, help="write the bundle into this Raspberry Pi OS .img file")
    parser.add_argument("--repo", type=Path, help="hydro-gateway checkout to take systemd/ and ansible/ from")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the bundle and write it where asked; 0 on success, 2 on a provisioning error."""
    # Imported here: the gateway service parses the same command line and should not carry YAML/vault code.
    from gateway.provision.bundle import build_bundle, write_bundle
    from gateway.provision.hostvars import HostVars
    from gateway.provision.image import write_bundle_to_image
    from gateway.provision.inventory import host_layers
    from gateway.provision.resources import find_resources
    from gateway.provision.vault import Vault

    try:
        if args.out is None and args.image is None:
            raise ProvisionError("nothing to do: give --out DIR and/or --image FILE")
        resources = find_resources(args.repo)
        vault = Vault(args.vault_password_file)
        layers = host_layers(
            args.inventory, args.host, vault, resources.role_dir, resources.ansible_dir, args.extra_vars
        )
        bundle = build_bundle(resources, HostVars(args.host, layers, vault), args.wheel, args.offline)
        if args.out is not None:
            write_bundle(bundle, args.out)
            print(f"bundle for {args.host} written to {args.out}")
        if args.image is not None:
            partition = write_bundle_to_image(bundle, args.image)
            print(f"bundle for {args.host} written to partition {partition.index} of {args.image}")
    except (ProvisionError, OSError) as exc:
        print(f"hydro-gateway provision: error: {exc}", file=sys.stderr)
        return 2
    return 0
