"""The YAML loader of config files: safe YAML plus Detectron2's `!!python/object/apply:eval` tag,
evaluated without executing code.

Detectron2 loads YAML unsafely so that Base-RetinaNet.yaml can compute its anchor sizes:

    SIZES: !!python/object/apply:eval ["[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, 64, 128, 256, 512 ]]"]

Here that one tag is evaluated by `restricted_eval`, which understands number and string literals,
lists and tuples, arithmetic, and list comprehensions over those; nothing else (no names but
comprehension variables, no calls, no attributes), and with bounds on the size of what it builds.
Every other `!!python/...` tag stays unknown to the safe loader and is refused.
"""
import ast
import operator
from typing import Any, Dict, List

import yaml

__all__ = ["ConfigLoader", "restricted_eval", "RestrictedEvalError"]

EVAL_TAG = "tag:yaml.org,2002:python/object/apply:eval"

_MAX_EXPRESSION_CHARS = 2000
_MAX_ELEMENTS = 100_000  # list elements an expression may build in all
_MAX_INT_BITS = 4096  # |int| < 2**4096: arithmetic on anything larger is refused before it is computed

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class RestrictedEvalError(ValueError):
    """An expression `restricted_eval` refuses; the message says what it met."""


def restricted_eval(expression: str) -> Any:
    """The value of a Python expression made only of literals, arithmetic and list comprehensions.

    Args:
        expression: e.g. "[[x, x * 2**(1.0/3)] for x in [32, 64]]".

    Returns:
        Numbers, strings, lists and tuples of them.

    Raises:
        RestrictedEvalError: for anything else (a name, call, attribute, subscript, lambda...), for
            arithmetic on non-numbers or on integers of more than 4096 bits, and for an expression
            building more than 100,000 list elements.
    """
    if not isinstance(expression, str):
        raise RestrictedEvalError(f"expected the expression as one string, got {expression!r}")
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise RestrictedEvalError(f"expression of {len(expression)} characters; at most {_MAX_EXPRESSION_CHARS}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise RestrictedEvalError(f"not a Python expression: {e.msg} in {expression!r}") from None
    return _Evaluator().visit(tree.body)


class _Evaluator:
    """Evaluates an allowed AST node; `names` holds the comprehension variables in scope."""

    def __init__(self):
        self.names: Dict[str, Any] = {}
        self.elements = 0

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise RestrictedEvalError(
                f"{_describe(node)} is not allowed; only literals, arithmetic and list comprehensions are"
            )
        return method(node)

    def _count(self, n: int) -> None:
        self.elements += n
        if self.elements > _MAX_ELEMENTS:
            raise RestrictedEvalError(f"the expression builds more than {_MAX_ELEMENTS} list elements")

    def _Constant(self, node: ast.Constant) -> Any:
        if type(node.value) not in (int, float, str, bool):
            raise RestrictedEvalError(f"the literal {node.value!r} is not allowed")
        return node.value

    def _List(self, node: ast.List) -> List[Any]:
        self._count(len(node.elts))
        return [self.visit(e) for e in node.elts]

    def _Tuple(self, node: ast.Tuple) -> tuple:
        self._count(len(node.elts))
        return tuple(self.visit(e) for e in node.elts)

    def _Name(self, node: ast.Name) -> Any:
        if node.id not in self.names:
            raise RestrictedEvalError(f"the name {node.id!r} is not allowed; only comprehension variables are")
        return self.names[node.id]

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise RestrictedEvalError(f"the operator {type(node.op).__name__} is not allowed")
        return op(_number(self.visit(node.operand)))

    def _BinOp(self, node: ast.BinOp) -> Any:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise RestrictedEvalError(f"the operator {type(node.op).__name__} is not allowed")
        left, right = _number(self.visit(node.left)), _number(self.visit(node.right))
        if op is operator.pow and isinstance(left, int) and isinstance(right, int) and right > 0:
            # The result has about bit_length(left) * right bits: refuse before computing it.
            if max(abs(left).bit_length(), 1) * right > _MAX_INT_BITS:
                raise RestrictedEvalError(f"{left} ** {right} is too large")
        try:
            result = op(left, right)
        except (ArithmeticError, ValueError) as e:
            raise RestrictedEvalError(f"{type(e).__name__}: {e}") from None
        if isinstance(result, int) and result.bit_length() > _MAX_INT_BITS:
            raise RestrictedEvalError(f"an intermediate integer exceeds {_MAX_INT_BITS} bits")
        return result

    def _ListComp(self, node: ast.ListComp) -> List[Any]:
        saved = dict(self.names)
        try:
            return self._comprehend(node.elt, node.generators)
        finally:
            self.names = saved

    def _comprehend(self, elt: ast.AST, generators: List[ast.comprehension]) -> List[Any]:
        if not generators:
            self._count(1)
            return [self.visit(elt)]
        first, rest = generators[0], generators[1:]
        if first.ifs or first.is_async:
            raise RestrictedEvalError("comprehension conditions ('if') are not allowed")
        iterable = self.visit(first.iter)
        if not isinstance(iterable, (list, tuple)):
            raise RestrictedEvalError(f"a comprehension must iterate over a list or tuple, got {iterable!r}")
        out = []
        for value in iterable:
            self._bind(first.target, value)
            out.extend(self._comprehend(elt, rest))
        return out

    def _bind(self, target: ast.AST, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.names[target.id] = value
        elif isinstance(target, ast.Tuple) and isinstance(value, (list, tuple)) and len(value) == len(target.elts):
            for t, v in zip(target.elts, value):
                self._bind(t, v)
        else:
            raise RestrictedEvalError(f"cannot assign {value!r} to the comprehension target {_describe(target)}")


def _number(value: Any) -> Any:
    if type(value) not in (int, float):
        raise RestrictedEvalError(f"arithmetic is allowed on numbers only, got {value!r}")
    return value


def _describe(node: ast.AST) -> str:
    try:
        return f"{type(node).__name__} '{ast.unparse(node)}'"
    except Exception:  # an AST node ast.unparse does not handle: its type is enough
        return type(node).__name__


class ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads `!!python/object/apply:eval ["expression"]` through
    `restricted_eval`. Any other Python tag stays an error of the safe loader."""


def _construct_eval(loader: ConfigLoader, node: yaml.Node) -> Any:
    args = loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode) else None
    if not args or len(args) != 1 or not isinstance(args[0], str):
        raise yaml.constructor.ConstructorError(
            None, None, "!!python/object/apply:eval takes one expression string, as in !!python/object/apply:eval "
            "[\"[x * 2 for x in [16, 32]]\"]", node.start_mark,
        )
    try:
        return restricted_eval(args[0])
    except RestrictedEvalError as e:
        raise yaml.constructor.ConstructorError(
            None, None, f"!!python/object/apply:eval [{args[0]!r}]: {e}", node.start_mark
        ) from None


ConfigLoader.add_constructor(EVAL_TAG, _construct_eval)
