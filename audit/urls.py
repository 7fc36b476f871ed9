from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy
from django_otp.decorators import otp_required

from audit import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("login/verify/", views.verify_view, name="verify"),
    path("mfa/enrol/", views.enrol_view, name="enrol"),
    path("logout/", views.logout_view, name="logout"),
    path(
        "password/change/",
        otp_required(
            auth_views.PasswordChangeView.as_view(
                template_name="accounts/password_change_form.html",
                success_url=reverse_lazy("accounts:password_change_done"),
            )
        ),
        name="password_change",
    ),
    path(
        "password/change/done/",
        otp_required(auth_views.PasswordChangeDoneView.as_view(template_name="accounts/password_change_done.html")),
        name="password_change_done",
    ),
]
