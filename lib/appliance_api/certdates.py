"""When a PEM certificate expires, read with the standard library only.

/status reports how many days the API's own certificate has left; loading
cryptography for that would cost every /status about 200 ms, so this walks
the DER of the first CERTIFICATE block just far enough to reach notAfter
(Certificate -> tbsCertificate -> [version], serial, signature, issuer,
validity). Anything it cannot read is None, never an exception.
"""
import binascii

_BEGIN, _END = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"


def not_after(pem):
    """The first certificate's notAfter in seconds since the epoch, or None."""
    start = pem.find(_BEGIN)
    end = pem.find(_END, start + 1)
    if start < 0 or end < 0:
        return None
    try:
        der = binascii.a2b_base64(b"".join(pem[start + len(_BEGIN):end].split()))
        certificate = _element(der, 0, 0x30)
        tbs = _element(der, certificate[0], 0x30)
        position = tbs[0]
        if der[position] == 0xA0:  # [0] version, absent in version 1 certificates
            position = _element(der, position)[1]
        for tag in (0x02, 0x30, 0x30):  # serial number, signature algorithm, issuer
            position = _element(der, position, tag)[1]
        validity = _element(der, position, 0x30)
        position = _element(der, validity[0])[1]  # past notBefore
        value = _element(der, position)
        return _seconds(der[position], der[value[0]:value[1]])
    except (IndexError, ValueError, binascii.Error):
        return None


def days_left(path, now):
    """Whole days from now until the certificate in path expires (negative
    once it has); None when the file cannot be read as one."""
    try:
        with open(path, "rb") as file:
            moment = not_after(file.read())
    except OSError:
        return None
    return None if moment is None else int((moment - now) // 86400)


def _element(der, position, tag=None):
    """(content start, end) of the DER element at position; ValueError if its
    tag is not `tag` or its length is not one DER allows here."""
    if tag is not None and der[position] != tag:
        raise ValueError("unexpected tag")
    length = der[position + 1]
    start = position + 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("unsupported length")
        length = int.from_bytes(der[start:start + count], "big")
        start += count
    if start + length > len(der):
        raise ValueError("truncated")
    return start, start + length


def _seconds(tag, text):
    """UTCTime (0x17, YYMMDDHHMMSSZ) or GeneralizedTime (0x18,
    YYYYMMDDHHMMSSZ) as seconds since the epoch."""
    text = text.decode("ascii")
    if not text.endswith("Z"):
        raise ValueError("not UTC")
    if tag == 0x17:
        year = int(text[:2])
        year += 1900 if year >= 50 else 2000  # RFC 5280's reading of two digits
        rest = text[2:-1]
    elif tag == 0x18:
        year, rest = int(text[:4]), text[4:-1]
    else:
        raise ValueError("not a time")
    if len(rest) != 10 or not rest.isdigit():
        raise ValueError("not a time")
    month, day, hour, minute, second = (int(rest[i:i + 2]) for i in range(0, 10, 2))
    return _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second


def _days_from_civil(year, month, day):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468
