"""The graphs a compiled program runs: the model as trained, its simplified forward graph, and the
gradient graphs, each made on first use and kept.

The model graph is the elaborated graph with the numerical-stability rewrites applied — before
differentiation, so gradients are stable too (those of grad(...) in the program were taken from the
stable form during elaboration); `rewrites` lists each once, where it fires, as `gradlang check` does.
`stats` counts the simplification rules that fired in the graphs `gradlang ir` shows.
"""
from __future__ import annotations

from collections import Counter

from ..errors import GradError
from ..frontend.plan import Plan, loss_name
from ..ir.graph import Graph
from ..passes import differentiate, simplify
from ..passes.autodiff import differentiate_phases
from ..passes.modes import for_mode, mode_switches
from ..passes.stability import stabilize


class ProgramGraphs:
    """A program's graphs, and which loss is meant where a caller names none."""

    def __init__(self, elaborated, plan: Plan):
        self.losses: list[str] = list(elaborated.losses)   # outputs: "loss", "loss:<name>"
        self.param_names = list(elaborated.params)
        self.plan = plan
        self.stats: Counter = Counter()
        self.model_graph, self.rewrites = stabilize(elaborated.graph)
        self.forward_graph = simplify(self.model_graph, stats=self.stats)
        self._made: dict = {}   # the graphs made so far, by what they were made for

    def single_loss(self, loss: str | None = None) -> str:
        """The output of the loss named `loss`, or of the one loss training differentiates (the block's
        `loss`, or the only one). A program trained in phases has no such loss: it needs the name."""
        phases = self.plan.phases
        if loss is None and phases:
            names, first = ", ".join(loss_name(p.loss) for p in phases), loss_name(phases[0].loss)
            raise GradError(f"the program trains in phases, each on its own loss ({names}), and this needs a "
                            f"single loss; from Python, name it (prog.gradients(feed, \"{first}\"))")
        if loss is None:
            loss = self.plan.get("loss")
            if loss is None:
                if len(self.losses) > 1:
                    raise GradError(f"the program has {len(self.losses)} losses "
                                    f"({', '.join(map(loss_name, self.losses))}); "
                                    "say which to train with `loss = name` in the train block")
                return self.losses[0]
        output = "loss" if loss == "loss" else f"loss:{loss}"
        if output not in self.losses:
            raise GradError(f"no loss named {loss!r}; the program declares {', '.join(map(loss_name, self.losses))}",
                            self.plan.span_of("loss"))
        return output

    def loss_output(self, loss: str | None = None) -> str:
        """As `single_loss`, but a program trained in phases gives its first phase's loss: the tools that
        check one loss (gradcheck, cost, lint) check that one."""
        return self.plan.phases[0].loss if loss is None and self.plan.phases else self.single_loss(loss)

    def evaluated_losses(self) -> list[str]:
        """The losses evaluation reports: the trained one, or with phases each phase's (their sum is "loss")."""
        return [p.loss for p in self.plan.phases] if self.plan.phases else [self.single_loss()]

    def gradient_graph(self, loss: str | None = None, params: tuple | None = None) -> Graph:
        """The forward graph plus d loss / d param (outputs `grad:<name>`), simplified: for every param,
        or only for `params` (no backward work for the others). A program trained in phases, asked for
        no loss, gives what its training step differentiates: each phase's loss for its own params."""
        if loss is None and params is None and self.plan.phases:
            key = ("phases",)
            if key not in self._made:
                self._made[key] = simplify(self.raw_gradient_graph(), stats=self.stats)
            return self._made[key]
        output = self.single_loss(loss)
        key = output if params is None else (output, tuple(params))
        if key not in self._made:
            raw = differentiate(self.model_graph, output) if params is None \
                else differentiate_phases(self.model_graph, [(output, tuple(params))])
            self._made[key] = simplify(raw, stats=self.stats)
        return self._made[key]

    def raw_gradient_graph(self, loss: str | None = None) -> Graph:
        """The forward graph plus d loss / d param as autodiff makes them, before simplification."""
        phases = self.plan.phases
        if loss is None and phases:
            trained = {n for p in phases for n in p.params}
            return differentiate_phases(self.model_graph, [(p.loss, p.params) for p in phases],
                                        untrained=[n for n in self.param_names if n not in trained])
        return differentiate(self.model_graph, self.loss_output(loss))

    def scaled_gradient_graph(self, lr: float) -> Graph:
        """gradient_graph() with every gradient multiplied by `lr`, for the SGD step at a constant rate
        (updates.py: ScheduledOptimizer): the backward pass starts from lr instead of 1
        (`differentiate`'s seed), and simplification folds it into the mean's 1/B, so the update
        needs no pass to scale them. Its rewrites are not counted in `stats`."""
        key = ("scaled", lr)
        if key not in self._made:
            self._made[key] = simplify(differentiate(self.model_graph, self.single_loss(), seed=lr))
        return self._made[key]

    def for_mode(self, graph: Graph, training: bool) -> Graph:
        """`graph` as a run of this kind computes it: each `training(a, b)` replaced by the branch the kind
        takes (passes/modes.py), then simplified again, so that the cotangents that went to the other
        branch (zeros now) cost nothing either. `graph` itself when it has no such choice; made once per
        graph and kind (the scheduler would make the same choice, without the simplification)."""
        if not mode_switches(graph):
            return graph
        key = ("mode", id(graph), training)
        if key not in self._made:   # (the graph is kept with its copy: its id names no other while it lives)
            self._made[key] = (graph, simplify(for_mode(graph, training)))
        return self._made[key][1]

    def with_values(self, graph: Graph, names: list[str]) -> tuple[Graph, list[str]]:
        """`graph` with every name in `names` that is not yet an output made one (`value:<name>`), and
        the outputs to ask for: a named value of the program, found before simplification dropped what
        no output reads."""
        source = self.model_graph if graph is self.forward_graph else graph
        key = ("values", id(graph), tuple(names))
        wanted = [n if n in graph.outputs else f"value:{n}" for n in names]
        if key not in self._made:
            extended = source.copy()
            for name in names:
                if name in graph.outputs:
                    continue
                node = source.find_value(name)
                if node is None:
                    named = sorted({d["name"] for _, d in source.nx.nodes(data=True)
                                    if d["name"] and d["role"] == "forward" and d["op"] not in ("input", "param")})
                    raise GradError(f"no output or named value {name!r}; the program's outputs are "
                                    f"{', '.join(graph.outputs)}, and its named values "
                                    f"{', '.join(named) or 'none'}")
                extended.outputs[f"value:{name}"] = node
            self._made[key] = simplify(extended)
        return self._made[key], wanted
