"""Import path of saved detector states from before the split into ``seasonal``, ``robust``
and ``hst``: states are pickled with their class's module, so states saved by an older
dqpulse name ``dqpulse.detectors.river_models``. New code imports the modules themselves.
"""

from dqpulse.detectors.hst import HalfSpaceTreesDetector
from dqpulse.detectors.robust import RobustDetector
from dqpulse.detectors.seasonal import SeasonalDetector

__all__ = ["HalfSpaceTreesDetector", "RobustDetector", "SeasonalDetector"]
