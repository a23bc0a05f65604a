"""CHAP from URLs and LIBISCSI_CHAP_* against real targets: one way, mutual, and wrong secrets refused clearly."""

from __future__ import annotations

import pytest

from tests.initiator.ctl.helpers import ok_json, one_line_error, uiscsictl

pytestmark = pytest.mark.target


def test_chap_secret_from_environment_logs_in(tgtd):
    t = tgtd(size_mb=4, chap=("alice", "alicesecret12"))
    env = {"LIBISCSI_CHAP_USERNAME": "alice", "LIBISCSI_CHAP_PASSWORD": "alicesecret12"}
    assert ok_json("capacity", t.url(1), env=env)["blocks"] == 8192


def test_wrong_chap_secret_is_refused_with_a_clear_message(tgtd):
    t = tgtd(size_mb=4, chap=("alice", "alicesecret12"))
    url = f"iscsi://alice%wrongsecret99@127.0.0.1:{t.port}/{t.iqn}/1"
    err = one_line_error(uiscsictl("capacity", url))
    assert "authentication" in err.lower() or "chap" in err.lower()
    assert "wrongsecret99" not in err


def test_wrong_chap_secret_on_istgt_is_refused(istgt):
    t = istgt(size_mb=4, chap=("iuser", "isecret12345"))
    err = one_line_error(uiscsictl("capacity", f"iscsi://iuser%nope12345678@127.0.0.1:{t.port}/{t.iqn}/0"))
    assert "authentication" in err.lower() or "chap" in err.lower()


def test_mutual_chap_through_url_arguments(tgtd):
    t = tgtd(size_mb=4, chap=("alice", "alicesecret12"), mutual=("tgt", "targetsecret34"))
    url = (f"iscsi://alice%alicesecret12@127.0.0.1:{t.port}/{t.iqn}/1"
           "?target_user=tgt&target_password=targetsecret34")
    assert ok_json("capacity", url)["blocks"] == 8192
    bad = url.replace("targetsecret34", "notthesecret56")
    err = one_line_error(uiscsictl("capacity", bad))
    assert "notthesecret56" not in err
