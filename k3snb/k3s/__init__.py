"""k3s: find/install the binary, launch profiles, and the :class:`K3sCluster` handle."""

from .binary import K3sBinary, K3sVersion, find_k3s, install_k3s, k3s_version, parse_version
from .cluster import K3sCluster, Readiness, launch_k3s
from .profiles import Profile, get_profile, list_profiles, profile_names, validate_flags

__all__ = ["find_k3s", "install_k3s", "k3s_version", "parse_version", "K3sBinary", "K3sVersion", "launch_k3s",
           "K3sCluster", "Readiness", "list_profiles", "get_profile", "profile_names", "Profile", "validate_flags"]
