from meltr.cli.main import build_parser, main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_world_preview_is_registered():
    args = build_parser().parse_args(["world", "preview", "--n", "2", "--seed", "5"])
    assert args.n == 2 and args.seed == 5 and callable(args.func)


def test_preview_writes_a_png(tmp_path, capsys):
    out = tmp_path / "grid" / "preview.png"
    assert main(["world", "preview", "--out", str(out), "--n", "2", "--seed", "1"]) == 0
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert str(out) in capsys.readouterr().out
