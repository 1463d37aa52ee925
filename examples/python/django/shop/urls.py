from django.urls import path

from shop.views import Orders

urlpatterns = [path("orders", Orders.as_view())]
