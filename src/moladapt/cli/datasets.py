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
        if sizes and not str(row["location"]).startswith("not local"):
            if spec.group == "fsmol":  # long format: one row per (task, molecule)
                import pandas as pd

                frame = pd.read_csv(row["location"], usecols=["split", "task_id", "smiles"])
                tasks = frame.drop_duplicates("task_id")["split"].value_counts()
                line += (f"  [{len(frame)} rows, {frame['smiles'].nunique()} distinct SMILES; tasks "
                         + ", ".join(f"{tasks.get(part, 0)} {part}" for part in ("train", "valid", "test")) + "]")
            else:
                data = load_dataset(row["name"], download=False)
                line += f"  [{len(data)} rows, {len(set(data.smiles))} distinct SMILES × {data.num_tasks} tasks]"
        typer.echo(line)
        typer.echo(f"{'':<36} {spec.description} — {spec.citation}")
