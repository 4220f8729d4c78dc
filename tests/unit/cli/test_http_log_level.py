"""The HTTP client's per-request INFO lines ("HTTP Request: POST ...") are logged at DEBUG by
`pacore`: hidden at the default INFO level, shown when DEBUG is on."""
import logging

from megatron_pacore.cli import main


def test_http_request_lines_go_to_debug(caplog, capsys):
    assert main(["infer", "--model", "m", "--input", "i", "--output", "o", "--widths", "4,x"]) == 2
    for name in ("httpx", "httpx2"):
        caplog.clear()
        caplog.set_level(logging.INFO)
        logging.getLogger(name).info('HTTP Request: POST http://h/v1/chat/completions "HTTP/1.1 200 OK"')
        logging.getLogger(name).warning("kept")
        assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("WARNING", "kept")]
        caplog.clear()
        caplog.set_level(logging.DEBUG)
        logging.getLogger(name).info("HTTP Request: GET http://h/v1/models")
        assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("DEBUG", "HTTP Request: GET http://h/v1/models")]
