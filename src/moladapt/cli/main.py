"""moladapt's command line. Each subcommand lives in its own module; logic lives in the library."""

from __future__ import annotations

import typer

from moladapt.cli.auxiliary import auxiliary_command
from moladapt.cli.datasets import datasets
from moladapt.cli.demo import demo
from moladapt.cli.evaluate import evaluate
from moladapt.cli.fewshot import compare_command, few_shot_command, meta_train_command, plot_command
from moladapt.cli.inspect import inspect_command
from moladapt.cli.multitask import multitask_command
from moladapt.cli.predict import predict
from moladapt.cli.pretrain import pretrain_command
from moladapt.cli.report import report
from moladapt.cli.study import study_app
from moladapt.cli.train import train
from moladapt.cli.transfer import transfer_command

app = typer.Typer(help="Molecular property prediction when labels are scarce.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
app.command()(datasets)
app.command()(train)
app.command()(evaluate)
app.command()(predict)
app.command()(demo)
app.command("pretrain")(pretrain_command)
app.command("inspect")(inspect_command)
app.command("adapt", help="Adapt an encoder to a target task: fine-tune, fine-tune with auxiliary "
            "tasks (gradient surgery), or learn the tasks' weights by bi-level optimisation.")(auxiliary_command)
app.command("auxiliary")(auxiliary_command)
app.command("multitask")(multitask_command)
app.command("transfer")(transfer_command)
app.command()(report)
app.command("meta-train")(meta_train_command)
app.command("few-shot")(few_shot_command)
app.command("few-shot-plot")(plot_command)
app.command("few-shot-compare")(compare_command)
app.add_typer(study_app, name="study", help="Declarative experiment grids: plan, run, status, export.")

if __name__ == "__main__":
    app()
