"""cosmos3-robot's compact world-action model as a LeRobot policy.

Importing this package (LeRobot does it at start-up for every ``lerobot_policy_*``
distribution) registers the ``cosmos3`` policy type, so ``lerobot-train --policy.type=cosmos3``
and ``lerobot-eval --policy.path=...`` work. LeRobot finds the classes by name:
``Cosmos3Config`` here, ``Cosmos3Policy`` in ``modeling_cosmos3`` and
``make_cosmos3_pre_post_processors`` in ``processor_cosmos3``. Our built-in MuJoCo tasks
are a separate plugin, ``lerobot_env_cosmos3_sim`` (``--env.type=cosmos3_sim``).
"""

from lerobot_policy_cosmos3.configuration_cosmos3 import Cosmos3Config
from lerobot_policy_cosmos3.modeling_cosmos3 import Cosmos3Policy
from lerobot_policy_cosmos3.processor_cosmos3 import make_cosmos3_pre_post_processors

__all__ = ["Cosmos3Config", "Cosmos3Policy", "make_cosmos3_pre_post_processors"]
