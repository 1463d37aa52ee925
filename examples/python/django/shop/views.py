"""One API view: the orders of the customer whose key called it."""

from rest_framework.response import Response
from rest_framework.views import APIView


class Customer:
    """The project's user for a key's owner (here: only its id)."""

    is_authenticated = True

    def __init__(self, account: str) -> None:
        self.account = account


def customer(owner, verdict):
    """KEYWARD["USER_FOR_OWNER"]: a key's owner as the project's user."""
    return Customer(owner) if owner else None


class Orders(APIView):
    required_scope = "orders:read"

    def get(self, request):
        return Response({"customer": request.user.account, "orders": [], "key": request.auth.key_id})
