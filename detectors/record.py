"""Named, typed records that are compact JSON arrays: the shape of every stored state.

A :class:`Record` is a ``list`` whose items have names: a subclass declares its fields as
annotations, in wire order, each with a default. Code reads and writes ``record.name``; the
store sees a plain JSON array (orjson writes ``list`` subclasses natively), and a record
equals the list it is read back as, so a state restored from a changelog compares equal to
the one that was written. The layout is declared once, in the class; positions never
appear in the code that uses it.

Why not ``msgspec.Struct(array_like=True)``: the same array on the wire, and smaller in
memory (a ``gc=False`` Struct of the 31 numbers takes 264 B, this record 312 B), but a
Struct is not a ``list``: the service's tables write states with orjson, which does not
know Structs, and a state read back would no longer equal the one in memory.

Fields are read through C-level getters (``operator.itemgetter``), as fast as indexing by
a constant; writing through the name goes through a small Python setter, so the few
updates made for every event are methods of the record that index it directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import itemgetter
from typing import Any, ClassVar, TypeVar

__all__ = ["Record", "group"]

R = TypeVar("R", bound="Record")


def _setter(index: int) -> Any:
    def set_field(self: list[Any], value: Any) -> None:
        self[index] = value

    return set_field


class Record(list[Any]):
    """Base of the named records: fields are the class's annotations, in order.

    A subclass may declare a variable-length tail after its fields (``TAIL = True``): the
    items after the named ones (a recent window, say), read with :meth:`tail`.

    Examples
    --------
    >>> class Point(Record):
    ...     VERSION = 1
    ...     x: int = 0
    ...     y: float = 0.5
    >>> p = Point.new()
    >>> p.x = 3
    >>> p, p.y, p == [3, 0.5], Point.FIELDS
    ([3, 0.5], 0.5, True, ('x', 'y'))
    >>> Point.of([1, 2.0]).x
    1

    """

    __slots__ = ()
    #: Version of the record's layout (bumped with an upgrade in :mod:`detectors.upgrade`).
    VERSION: ClassVar[int] = 1
    FIELDS: ClassVar[tuple[str, ...]] = ()
    DEFAULTS: ClassVar[tuple[Any, ...]] = ()
    TAIL: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Fields are the annotated names with a default (an annotation alone declares
        # something else, such as a group property set after the class).
        own = [name for name in cls.__dict__.get("__annotations__", {})
               if not name.isupper() and name in cls.__dict__]
        if not own:
            return
        fields = cls.FIELDS + tuple(own)
        defaults = cls.DEFAULTS + tuple(cls.__dict__[name] for name in own)
        for index, name in enumerate(fields):
            setattr(cls, name, property(itemgetter(index), _setter(index)))
        cls.FIELDS, cls.DEFAULTS = fields, defaults

    @classmethod
    def new(cls: type[R]) -> R:
        """A record with every field at its default."""
        return cls(cls.DEFAULTS)

    @classmethod
    def of(cls: type[R], items: Iterable[Any]) -> R:
        """The record of a stored array (as read back from JSON)."""
        return items if type(items) is cls else cls(items)

    def tail(self) -> list[Any]:
        """The items after the named fields."""
        return self[len(self.FIELDS):]

    def named(self) -> dict[str, Any]:
        """Field name -> value (for people: tests, debugging, docs).

        Examples
        --------
        >>> class Pair(Record):
        ...     a: int = 1
        ...     b: int = 2
        >>> Pair.new().named()
        {'a': 1, 'b': 2}

        """
        return dict(zip(self.FIELDS, self, strict=False))


def group(record: type[Record], first: str, last: str) -> property:
    """A property for the fields ``first`` to ``last`` of ``record`` as one list (a slice:
    read and written in one step, as a model's state is loaded and stored).

    Examples
    --------
    >>> class Box(Record):
    ...     a: int = 1
    ...     b: int = 2
    ...     c: int = 3
    >>> Box.bc = group(Box, "b", "c")
    >>> box = Box.new()
    >>> box.bc = [20, 30]
    >>> box.bc, box
    ([20, 30], [1, 20, 30])

    """
    start, stop = record.FIELDS.index(first), record.FIELDS.index(last) + 1

    def get(self: list[Any]) -> list[Any]:
        return self[start:stop]

    def put(self: list[Any], values: list[Any]) -> None:
        self[start:stop] = values

    return property(get, put, doc=f"the fields {first} to {last}")
