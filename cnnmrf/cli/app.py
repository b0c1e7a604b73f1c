"""The Typer application: the top-level ``--debug`` flag (every command takes it after its name too) and the
commands, each in its own module."""

from __future__ import annotations

import typer

from cnnmrf.cli import calibrate, evaluate, predict, preprocess, train, train_person
from cnnmrf.cli.console import debug_mode, guarded
from cnnmrf.cli.options import DebugOpt

app = typer.Typer(
    name="cnnmrf",
    help="ConvNet part detector + MRF spatial model for human pose (Tompson et al., NIPS 2014) on FLIC.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # --help answers in a quarter of a second (tests/test_cli_help.py): plain help and usage errors, as rich's panels
    # took longer to draw than all the rest; and a default for the unset --help flag, which typer otherwise checks
    # through pydantic (0.15 s of imports) before any command runs.
    rich_markup_mode=None,
    context_settings={"default_map": {"help": False}},
)


@app.callback()
def _main(debug: DebugOpt = False) -> None:
    debug_mode["on"] = debug  # every invocation starts from here: a command's own --debug can only turn it on


app.command("preprocess")(guarded(preprocess.preprocess))
app.command("train-detector")(guarded(train.train_detector))
app.command("train-mrf")(guarded(train.train_mrf))
app.command("train-joint")(guarded(train.train_joint))
app.command("train-person")(guarded(train_person.train_person))
app.command("evaluate")(guarded(evaluate.evaluate))
app.command("predict")(guarded(predict.predict))
app.command("calibrate")(guarded(calibrate.calibrate))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
