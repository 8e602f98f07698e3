"""moladapt: molecular property prediction when labels are scarce."""

__version__ = "0.1.0"

__all__ = ["MolPropertyModel", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import moladapt` (e.g. for the CLI's --help) does not import torch.
    if name == "MolPropertyModel":
        from moladapt.api import MolPropertyModel

        return MolPropertyModel
    raise AttributeError(name)
