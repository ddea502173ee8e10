"""The import graph of lib/appliance_api, read from the source (every
import, function-local ones included, and app's call of each handler the
routing table names): no cycle, and system/ imports nothing above itself
but layout (which only names paths) and configread (which only reads config
lines). A function-local import is for
start-up cost, never to hide a cycle."""
import ast
import os

from appliance_api.routes import ROUTES

LIB = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "lib"))
PACKAGE = "appliance_api"


def modules():
    found = {}
    for folder, _dirs, names in os.walk(os.path.join(LIB, PACKAGE)):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, LIB)[:-3].replace(os.sep, ".")
                found[module[:-len(".__init__")] if module.endswith(".__init__")
                      else module] = path
    return found


def import_graph():
    """{module: {modules it imports}}, within the package."""
    known = modules()
    graph = {}
    for module, path in known.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        with open(path, encoding="utf-8") as file:
            tree = ast.parse(file.read(), path)
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    child = target + "." + alias.name
                    imported.add(child if child in known else target)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[module] = {name for name in imported if name in known and name != module}
    # app.call_handler imports each handler by its name in the routing table.
    graph[PACKAGE + ".app"] |= {PACKAGE + ".handlers." + handler.split(":")[0]
                                for _method, _pattern, handler in ROUTES}
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_system_imports_nothing_above_itself_but_layout_and_configread():
    """layout names paths, configread reads config lines: leaves, importing
    nothing of the package (checked below), that system/ may stand on."""
    allowed = {PACKAGE + ".layout", PACKAGE + ".configread"}
    graph = import_graph()
    assert {leaf: sorted(graph[leaf]) for leaf in allowed} == {leaf: [] for leaf in allowed}
    upward = {module: sorted(other for other in imported
                             if not other.startswith(PACKAGE + ".system") and other not in allowed)
              for module, imported in import_graph().items()
              if module.startswith(PACKAGE + ".system")}
    assert {module: up for module, up in upward.items() if up} == {}


def test_the_graph_reader_sees_function_local_imports_and_cycles():
    """The reader itself: a hidden cycle of two modules is found."""
    graph = import_graph()
    assert PACKAGE + ".response" in graph[PACKAGE + ".handlers.configs"]
    assert PACKAGE + ".handlers.status" in graph[PACKAGE + ".app"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
