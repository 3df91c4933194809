"""Client-side HTTP helpers shared by the remote engine (engines/) and the remote reward models
(rewards/): below both, importing neither."""
