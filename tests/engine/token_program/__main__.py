"""A stack with only the bootstrap token: the real provider process must import providers/."""

import pulumi

from providers.bootstrap_token import BootstrapToken

token = BootstrapToken("bootstrap-token", ttl_seconds=3600, renew_before_seconds=600)
pulumi.export("expires", token.expires)
