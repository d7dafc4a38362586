from ._omen import Collection as Collection
from ._omen import CorruptionError as CorruptionError
from ._omen import Filter as Filter
from ._omen import Index as Index
from ._omen import __version__ as __version__
from ._omen import kinds as kinds
from ._omen import simd_isa as simd_isa
