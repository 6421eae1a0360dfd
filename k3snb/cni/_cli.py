"""``k3snb cni install``: write the fake CNI plugin and its conflist."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("cni", help="the fake CNI plugin")
    sub = p.add_subparsers(dest="cni_command", required=True)
    i = sub.add_parser("install", help="install the plugin program(s) and a conflist referencing it")
    i.add_argument("--bin-dir", required=True, help="CNI plugin directory (e.g. /opt/cni/bin)")
    i.add_argument("--conf-dir", required=True, help="CNI config directory (e.g. /etc/cni/net.d)")
    i.add_argument("--subnet", default="10.88.0.0/16", help="address range (CIDR), default 10.88.0.0/16")
    i.add_argument("--network", default="k3snb", help="network name in the conflist (letters, digits, _ . -)")
    i.add_argument("--name", dest="names", action="append", help="plugin program name (default k3snb)")
    i.add_argument("--alias", dest="aliases", action="append", default=[], help="extra name, e.g. host-local")
    i.add_argument("--data-dir", help="allocation state directory")
    i.add_argument("--cni-version", default="1.0.0", metavar="V", help="cniVersion of the conflist (default 1.0.0)")
    i.add_argument("--force", action="store_true", help="replace programs not written by k3snb")
    i.set_defaults(func=_install)


def _install(args: argparse.Namespace) -> int:
    from . import install_cni

    inst = install_cni(
        args.bin_dir,
        args.conf_dir,
        names=tuple(args.names or ("k3snb",)),
        aliases=tuple(args.aliases),
        subnet=args.subnet,
        network=args.network,
        data_dir=args.data_dir,
        cni_version=args.cni_version,
        force=args.force,
    )
    for prog in inst.programs:
        print(f"program  {prog}")
    print(f"conflist {inst.conflist}")
    print(f"state    {inst.data_dir}")
    return 0
