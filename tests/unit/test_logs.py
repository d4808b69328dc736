import json
import logging

from cdc.observe.logs import mask, setup_logging


def test_mask_hides_dsn_passwords_and_tokens() -> None:
    text = "connect postgresql://bob:hunter2@db:5432/x with Authorization: Bearer abc.def and password=s3cr3t"
    out = mask(text)
    assert "hunter2" not in out and "abc.def" not in out and "s3cr3t" not in out
    assert "postgresql://bob:***@db:5432/x" in out


def test_json_format(capsys) -> None:
    setup_logging("json", "INFO")
    logging.getLogger("cdc.test").info("source %s at postgresql://u:pw@h/db", "s1")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    doc = json.loads(line)
    assert doc["level"] == "info" and doc["logger"] == "cdc.test"
    assert "pw@" not in doc["msg"] and "s1" in doc["msg"]
    setup_logging("text", "WARNING")


def test_text_format_masks_tracebacks(capsys) -> None:
    setup_logging("text", "INFO")
    try:
        raise RuntimeError("cannot connect to postgresql://u:hunter2@h/db")
    except RuntimeError:
        logging.getLogger("cdc.test").exception("failed")
    err = capsys.readouterr().err
    assert "RuntimeError" in err and "hunter2" not in err and "u:***@h" in err
    setup_logging("text", "WARNING")
