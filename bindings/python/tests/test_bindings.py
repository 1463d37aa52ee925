"""The package's tables come from the C library, and its records read
JSON from a newer library: statuses, denials, new fields."""

import keyward
from keyward import _errors, _records
from keyward._native import ffi, lib


def _c_enum(name):
    return dict(ffi.typeof(name).relements)


def test_every_failing_status_raises_its_own_class():
    statuses = _c_enum("kw_status")
    assert statuses.pop("KW_STATUS_OK") == 0
    assert statuses, "the C enum is visible"
    for name, number in statuses.items():
        cls = _errors._STATUS_ERRORS.get(number)
        assert cls is not None, f"{name} has no exception class"
        assert issubclass(cls, keyward.KeywardError) and cls is not keyward.KeywardError, name
    assert _errors._STATUS_ERRORS[lib.KW_STATUS_NOT_FOUND] is keyward.NotFound
    assert _errors._STATUS_ERRORS[lib.KW_STATUS_STORE_LOCKED] is keyward.StoreLocked


def test_denials_are_the_c_enum():
    c = _c_enum("kw_denial")
    assert c.pop("KW_DENIAL_NONE") == 0
    assert {f"KW_DENIAL_{d.name}": d.value for d in keyward.Denial} == c


def test_an_error_carries_the_libraries_status_number(tmp_path):
    try:
        keyward.Store(str(tmp_path / "s"), prefix="Not A Prefix")
    except keyward.InvalidInput as e:
        assert e.status == lib.KW_STATUS_INVALID_OPTIONS
    else:
        raise AssertionError("an invalid prefix was accepted")


def test_records_read_json_with_fields_they_do_not_know():
    info = _records.KeyInfo._from(
        {
            "id": "4fK9xQ2mLp7A",
            "name": "n",
            "masked": "kw_4fK9xQ2mLp7A_\u2026abcd",
            "created_at": "2026-11-28T08:04:02.123Z",
            "rotated_at": None,
            "last_used_at": None,
            "generation": 1,
            "disabled": False,
            "expires_at": None,
            "whitelist_enabled": False,
            "grace_until": None,
            "metadata": None,
            "owner": "acct_1",
        }
    )
    assert info.name == "n"
    usage = _records.Usage._from(
        {
            "key_id": "4fK9xQ2mLp7A",
            "totals": {"allowed": 3, "denied": 1, "wrong_secret": 1, "rate_limited": 7},
            "last_used": None,
            "ips": [],
            "integrations": [],
            "hourly": [],
            "quota": {"used": 1},
        }
    )
    assert (usage.totals.allowed, usage.totals.wrong_secret) == (3, 1)
