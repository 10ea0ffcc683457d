"""`aistack admin link`: a one-time console sign-in link, for whoever holds the credential.

The link is made from the admin credential alone (access/credential.py): the master key
when one is configured (`auth.master_key`, `$AISTACK_MASTER_KEY`), else the admin key
`aistack serve` made in the data directory. No database and no running gateway needed;
every replica that shares the credential accepts it, once.
"""

from __future__ import annotations

import argparse
import sys

from aistack.access import credential
from aistack.cli._common import load_config
from aistack.config import local_url


def admin(args: argparse.Namespace) -> int:
    loaded = load_config(args)
    if loaded is None:
        return 2
    cfg = loaded.config
    try:
        cred = credential.resolve(cfg.auth.master_key, loaded.data_dir)
    except credential.CredentialError as e:
        print(f"aistack: {e}", file=sys.stderr)
        return 1
    if cred is None:
        print(
            f"aistack: no admin credential yet: `aistack serve` makes one in "
            f"{credential.path_in(loaded.data_dir)} on its first start (or set "
            "AISTACK_MASTER_KEY)",
            file=sys.stderr,
        )
        return 1
    minutes = min(max(args.minutes, 1.0), credential.LINK_TTL_MAX / 60)
    base = args.url or cfg.server.public_url or local_url(cfg)
    print(credential.link_url(base, cred, minutes * 60))
    print(
        f"One-time console sign-in link, valid {minutes:g} minutes (made from {cred.source}).",
        file=sys.stderr,
    )
    return 0
