"""Made-up bounce and complaint messages in the common shapes (none copied from anywhere).

- `dsn`: an RFC 3464 multipart/report as Postfix, Sendmail and Exchange send it
  (Action + Status per recipient, the original's headers attached);
- `exim_text`: Exim's plain-text "Mail delivery failed" (no DSN part);
- `qmail_text`: qmail's "Hi. This is the qmail-send program" form;
- `arf`: an RFC 5965 feedback report (a spam complaint);
- `vacation`: an out-of-office auto-reply.
"""

from __future__ import annotations

import uuid


def _mid(tag: str) -> str:
    return f"<{tag}.{uuid.uuid4().hex}@mx.example.net>"


def dsn(
    to: str,
    recipient: str,
    *,
    status: str = "5.1.1",
    action: str = "failed",
    diagnostic: str = "smtp; 550 5.1.1 <{r}>: Recipient address rejected: User unknown",
    original_return_path: str = "",
    message_id: str | None = None,
    mta: str = "Postfix",
    date: str = "",
) -> bytes:
    boundary = "B0UND-" + uuid.uuid4().hex
    original = (
        (f"Return-Path: <{original_return_path}>\n" if original_return_path else "")
        + f"From: Orbit Daily <news@orbitdaily.example>\nTo: <{recipient}>\nSubject: Orbit Daily\n"
        "Message-ID: <digest.2026-11-21.abc@orbitdaily.example>\n"
    )
    return (
        f"From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\n"
        f"To: {to}\n"
        f"Subject: Undelivered Mail Returned to Sender\n"
        f"Message-ID: {message_id or _mid('dsn')}\n"
        + (f"Date: {date}\n" if date else "")
        + f"Auto-Submitted: auto-replied\n"
        f"MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\n'
        f"\n--{boundary}\n"
        f"Content-Type: text/plain; charset=us-ascii\n\n"
        f"This is the mail system at host mx.example.net ({mta}).\n\n"
        f"I'm sorry to have to inform you that your message could not be delivered.\n\n"
        f"--{boundary}\n"
        f"Content-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.example.net\n"
        f"Arrival-Date: Sat, 21 Nov 2026 07:00:01 +0000\n\n"
        f"Final-Recipient: rfc822; {recipient}\n"
        f"Original-Recipient: rfc822;{recipient}\n"
        f"Action: {action}\n"
        f"Status: {status}\n"
        f"Diagnostic-Code: {diagnostic.format(r=recipient)}\n"
        f"\n--{boundary}\n"
        f"Content-Type: text/rfc822-headers\n\n"
        f"{original}"
        f"\n--{boundary}--\n"
    ).encode()


def exim_text(to: str, recipient: str) -> bytes:
    return (
        f"From: Mail Delivery System <Mailer-Daemon@mail.example.net>\n"
        f"To: {to}\n"
        f"Subject: Mail delivery failed: returning message to sender\n"
        f"Message-ID: {_mid('exim')}\n"
        f"Auto-Submitted: auto-replied\n\n"
        f"This message was created automatically by mail delivery software.\n\n"
        f"A message that you sent could not be delivered to one or more of its\n"
        f"recipients. This is a permanent error. The following address(es) failed:\n\n"
        f"  {recipient}\n"
        f"    retry timeout exceeded\n\n"
        f"------ This is a copy of the message, including all the headers. ------\n\n"
        f"From: news@orbitdaily.example\nTo: {recipient}\nSubject: Orbit Daily\n\nhello\n"
    ).encode()


def qmail_text(to: str, recipient: str) -> bytes:
    return (
        f"From: MAILER-DAEMON@mail.example.org\n"
        f"To: {to}\n"
        f"Subject: failure notice\n"
        f"Message-ID: {_mid('qmail')}\n\n"
        f"Hi. This is the qmail-send program at mail.example.org.\n"
        f"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        f"This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        f"<{recipient}>:\n"
        f"Sorry, no mailbox here by that name. (#5.1.1)\n\n"
        f"--- Below this line is a copy of the message.\n\n"
        f"From: news@orbitdaily.example\nTo: {recipient}\nSubject: Orbit Daily\n\nhello\n"
    ).encode()


def arf(
    to: str,
    recipient: str | None,
    *,
    feedback_type: str = "abuse",
    original_return_path: str = "",
    message_id: str | None = None,
) -> bytes:
    boundary = "ARF-" + uuid.uuid4().hex
    rcpt = f"Original-Rcpt-To: {recipient}\n" if recipient else ""
    original_to = recipient or "redacted@example.com"
    return_path = f"Return-Path: <{original_return_path}>\n" if original_return_path else ""
    return (
        f"From: <staff@complaints.example.com>\n"
        f"To: {to}\n"
        f"Subject: FW: Orbit Daily\n"
        f"Message-ID: {message_id or _mid('arf')}\n"
        f"MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"\n'
        f"\n--{boundary}\n"
        f"Content-Type: text/plain; charset=us-ascii\n\n"
        f"This is an email abuse report for an email message received from IP 192.0.2.1.\n"
        f"\n--{boundary}\n"
        f"Content-Type: message/feedback-report\n\n"
        f"Feedback-Type: {feedback_type}\n"
        f"User-Agent: SomeGenerator/1.0\n"
        f"Version: 1\n"
        f"{rcpt}"
        f"Arrival-Date: Sat, 21 Nov 2026 08:00:00 +0000\n"
        f"\n--{boundary}\n"
        f"Content-Type: message/rfc822\n"
        f"Content-Disposition: inline\n\n"
        f"{return_path}"
        f"From: Orbit Daily <news@orbitdaily.example>\nTo: {original_to}\nSubject: Orbit Daily\n"
        f"Message-ID: <digest.2026-11-21.def@orbitdaily.example>\n\nThe news.\n"
        f"\n--{boundary}--\n"
    ).encode()


def vacation(to: str, sender: str) -> bytes:
    return (
        f"From: {sender}\nTo: {to}\nSubject: Out of Office: Orbit Daily\n"
        f"Message-ID: {_mid('ooo')}\nAuto-Submitted: auto-replied\nX-Autoreply: yes\n\n"
        f"I am away until Monday with limited access to email.\n"
    ).encode()
