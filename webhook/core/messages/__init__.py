"""Every sentence a user reads: what was found, the rule, and the way through.

Nothing else in the package writes user-facing text. The sentences live in modules by
subject (text: how costgate writes; objects: what an object says; cost; approval; limits)
and are read from here as `messages.name`, as asyncio's package face hands on its modules.
"""

from __future__ import annotations

from . import approval as _approval
from . import cost as _cost
from . import devices as _devices
from . import kinds as _kinds
from . import limits as _limits
from . import objects as _objects
from . import schedule as _schedule
from . import text as _text

# After the modules: `messages.cost` is then the function, not the module of that name.
from .approval import *  # noqa: F403
from .cost import *  # noqa: F403
from .devices import *  # noqa: F403
from .kinds import *  # noqa: F403
from .limits import *  # noqa: F403
from .objects import *  # noqa: F403
from .schedule import *  # noqa: F403
from .text import *  # noqa: F403

__all__ = [
    *_approval.__all__,
    *_cost.__all__,
    *_devices.__all__,
    *_kinds.__all__,
    *_limits.__all__,
    *_objects.__all__,
    *_schedule.__all__,
    *_text.__all__,
]
