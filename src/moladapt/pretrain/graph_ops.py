"""Batch-level graph operations used by the pretraining objectives.

Everything works on a whole :class:`~moladapt.types.GraphBatch` with tensor operations
(no Python loop over molecules). Batches must be *contiguous*: the atoms of graph ``g``
form one block and the blocks are in graph order, as :meth:`MolGraphs.collate` and every
function here produce.

Random numbers always come from the given CPU ``torch.Generator`` (then moved to the
batch's device), so a transform is reproducible from the generator's seed alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from moladapt.types import GraphBatch


def graph_sizes(batch: GraphBatch) -> Tensor:
    """``[B]`` number of atoms of each graph."""
    return torch.bincount(batch.batch, minlength=batch.num_graphs)


def graph_ptr(batch: GraphBatch) -> Tensor:
    """``[B + 1]`` offsets of each graph's atoms (the batch must be contiguous)."""
    sizes = graph_sizes(batch)
    return torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)])


def rand(n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
    """``n`` uniform numbers in [0, 1) from ``generator`` (CPU), on ``device``."""
    return torch.rand(n, generator=generator).to(device)


def rank_within_graph(batch_vec: Tensor, key: Tensor) -> Tensor:
    """Rank (0-based) of every node's ``key`` among the nodes of its graph, ties by position.

    Shapes: ``batch_vec [N]`` (contiguous graph ids), ``key [N]`` → ``[N]`` long.
    """
    n = batch_vec.shape[0]
    perm = torch.argsort(key, stable=True)
    perm = perm[torch.argsort(batch_vec[perm], stable=True)]
    sizes = torch.bincount(batch_vec)
    starts = torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)[:-1]])
    rank = torch.empty(n, dtype=torch.long, device=batch_vec.device)
    rank[perm] = torch.arange(n, device=batch_vec.device) - starts[batch_vec[perm]]
    return rank


def random_nodes_per_graph(
    batch: GraphBatch, counts: Tensor, generator: torch.Generator
) -> Tensor:
    """Boolean ``[N]`` mask selecting ``counts[g]`` atoms of each graph g uniformly at random.

    ``counts`` ``[B]`` is clipped to the graph sizes.
    """
    key = rand(batch.num_nodes, generator, batch.x.device)
    rank = rank_within_graph(batch.batch, key)
    return rank < counts[batch.batch]


def one_node_per_graph(batch: GraphBatch, generator: torch.Generator) -> Tensor:
    """``[B]`` global index of one uniformly sampled atom in each (non-empty) graph."""
    sizes = graph_sizes(batch)
    ptr = graph_ptr(batch)
    offset = (rand(batch.num_graphs, generator, sizes.device) * sizes).long()
    return ptr[:-1] + torch.minimum(offset, (sizes - 1).clamp(min=0))


def bfs_distance(edge_index: Tensor, sources: Tensor, num_nodes: int, max_dist: int) -> Tensor:
    """Hop distance from the nearest of ``sources``, by breadth-first search on tensors.

    With one source per graph of a batch (graphs are disjoint) this is each atom's
    shortest-path distance to its own graph's source. Atoms farther than ``max_dist`` or
    unreachable get ``max_dist + 1``.

    Shapes: ``edge_index [2, E]`` (both directions), ``sources [S]`` → ``[num_nodes]`` long.
    """
    src, dst = edge_index[0], edge_index[1]
    dist = torch.full((num_nodes,), max_dist + 1, dtype=torch.long, device=edge_index.device)
    frontier = torch.zeros(num_nodes, dtype=torch.bool, device=edge_index.device)
    frontier[sources] = True
    dist[sources] = 0
    visited = frontier.clone()
    for d in range(1, max_dist + 1):
        nxt = torch.zeros_like(frontier)
        nxt[dst[frontier[src]]] = True
        nxt &= ~visited
        if not bool(nxt.any()):
            break
        dist[nxt] = d
        visited |= nxt
        frontier = nxt
    return dist


def induced_subgraph(
    batch: GraphBatch, node_mask: Tensor, compact_graphs: bool = False
) -> tuple[GraphBatch, Tensor]:
    """The subgraph induced by the atoms in ``node_mask`` (bonds with both ends kept).

    With ``compact_graphs`` graphs left without atoms are removed and the rest renumbered
    (``y`` follows); otherwise ``num_graphs`` is unchanged (an emptied graph has no atoms).

    Returns ``(subgraph, new_index)``: ``new_index [N]`` maps an old atom index to its new
    one, ``-1`` for dropped atoms.
    """
    n = batch.num_nodes
    device = batch.x.device
    keep = node_mask.nonzero().squeeze(1)
    new_index = torch.full((n,), -1, dtype=torch.long, device=device)
    new_index[keep] = torch.arange(keep.numel(), device=device)
    emask = node_mask[batch.edge_index[0]] & node_mask[batch.edge_index[1]]
    graph_of = batch.batch[keep]
    num_graphs, y = batch.num_graphs, batch.y
    if compact_graphs:
        present = torch.zeros(batch.num_graphs, dtype=torch.bool, device=device)
        present[graph_of] = True
        graph_of = (torch.cumsum(present.long(), 0) - 1)[graph_of]
        num_graphs = int(present.sum())
        y = None if y is None else y[present]
    sub = GraphBatch(
        x=batch.x[keep],
        edge_index=new_index[batch.edge_index[:, emask]],
        edge_attr=batch.edge_attr[emask],
        batch=graph_of,
        num_graphs=num_graphs,
        y=y,
    )
    return sub, new_index


def mask_atom_features(x: Tensor, node_mask: Tensor, mask_index: int) -> Tensor:
    """A copy of ``x`` with the masked atoms' column 0 = MASK and other columns = 0."""
    out = x.clone()
    out[node_mask] = 0
    out[node_mask, 0] = mask_index
    return out


def undirected_bond_ids(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Id of the undirected bond of each directed edge: ``(bond_of_edge [E], n_bonds)``.

    Both directions of a bond share an id (``min * N + max``, made dense).
    """
    lo = torch.minimum(edge_index[0], edge_index[1])
    hi = torch.maximum(edge_index[0], edge_index[1])
    _, bond_of_edge = torch.unique(lo * num_nodes + hi, return_inverse=True)
    n_bonds = int(bond_of_edge.max()) + 1 if bond_of_edge.numel() else 0
    return bond_of_edge, n_bonds
