from hololm.demo import main


def test_demo_trains_evaluates_samples_and_continues(tmp_path, capsys):
    out = tmp_path / "demo"
    main(["--output_dir", str(out), "--max_steps", "2", "--sample_tokens", "8"])
    text = capsys.readouterr().out
    assert "from scratch" in text and "context  512" in text and "next:" in text
    for name in ("loss.png", "log.csv", "eval/perplexity.png", "checkpoints/step_2/config.json"):
        assert (out / name).is_file(), name
    main(["--output_dir", str(out), "--max_steps", "3", "--sample_tokens", "8"])
    assert "resuming" in capsys.readouterr().out
    assert (out / "checkpoints" / "step_3").is_dir()
