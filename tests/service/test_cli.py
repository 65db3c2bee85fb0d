"""deepmia serve's bind rules, deepmia user add (token printed once, stored hashed) and deepmia audit."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from deepmia.cli.main import main
from deepmia.data.catalog import open_catalog
from deepmia.data.catalog.models import Token
from deepmia.service.accounts import audit, check_token


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "--allow-remote"),
    (["--host", "10.1.2.3", "--allow-remote"], "without TLS"),
    (["--host", "0.0.0.0", "--allow-remote", "--tls-cert", "cert.pem"], "go together"),
])
def test_serve_refuses_a_remote_address_without_tls_or_proxy(args, message, capsys):
    assert main(["serve", *args]) == 2
    assert message in capsys.readouterr().err


def test_user_add_prints_a_token_once_stored_only_hashed_and_audit_lists_actions(tmp_path, capsys):
    db = str(tmp_path / "c.sqlite")
    assert main(["user", "add", "alice", "--role", "annotator", "--db", db]) == 0
    token = capsys.readouterr().out.strip()
    assert main(["user", "add", "alice", "--role", "viewer", "--db", db]) == 2
    assert main(["user", "add", "bob", "--role", "superuser", "--db", db]) == 2
    with open_catalog(db) as catalog:
        with catalog.session() as s:
            stored = s.scalars(select(Token)).one()
        assert token.split("_", 2)[2] not in (stored.hash, stored.salt)
        who = check_token(catalog, token)
        assert (who.user, who.role) == ("alice", "annotator")
        assert check_token(catalog, token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]) is None
        audit(catalog, "alice", "download", "output 3")
        audit(catalog, "bob", "view", "study 1")
    capsys.readouterr()
    assert main(["audit", "--db", db, "--user", "alice", "--json"]) == 0
    out = capsys.readouterr().out
    assert "output 3" in out and "study 1" not in out
    assert main(["audit", "--db", db, "--action", "view", "--since", "2000-01-01T00:00"]) == 0
    assert "study 1" in capsys.readouterr().out
