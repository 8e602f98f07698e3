"""`moladapt datasets`: the registered benchmarks, with sizes and provenance."""

from __future__ import annotations

import typer


def datasets(
    sizes: bool = typer.Option(False, "--sizes", help="Load each local file to count its labelled rows, distinct SMILES and tasks (slower)."),
) -> None:
    """List the datasets moladapt knows by name, where each file was found, and its source."""
    from moladapt.data.sources import DATASETS, dataset_table, load_dataset

    table = dataset_table()
    for _, row in table.iterrows():
        spec = DATASETS.get(row["name"])
        line = f"{row['name']:<36} {row['task_type']:<14} {row['metric']:<11} {row['location']}"
        if sizes and spec.group != "fsmol" and not str(row["location"]).startswith("not local"):
            data = load_dataset(row["name"], download=False)
            line += f"  [{len(data)} rows, {len(set(data.smiles))} distinct SMILES × {data.num_tasks} tasks]"
        typer.echo(line)
        typer.echo(f"{'':<36} {spec.description} — {spec.citation}")
