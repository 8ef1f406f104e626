from locllm.cli import SUBCOMMANDS, build_parser, main


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    for name in SUBCOMMANDS:
        try:
            parser.parse_args([name, "--help"])
        except SystemExit as exit_:
            assert exit_.code == 0
        assert name in capsys.readouterr().out


def test_user_error_is_one_line(capsys, tmp_path):
    code = main(["predict", str(tmp_path / "missing.png"), "--checkpoint", str(tmp_path / "none")])
    assert code != 0
