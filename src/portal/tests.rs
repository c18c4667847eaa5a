//! Tests of [`super`].

use super::forwarded_for;

#[test]
fn the_client_is_the_first_address_left_of_the_trusted_proxies() {
    let proxies = ["10.0.0.5".parse().unwrap()];
    let list = |s: &str| s.split(',').map(|a| a.trim().to_string()).collect::<Vec<_>>();
    let ip = |s: &str| Some(s.parse().unwrap());
    assert_eq!(forwarded_for(&list("6.6.6.6, 198.51.100.7"), &proxies), ip("198.51.100.7"));
    assert_eq!(forwarded_for(&list("198.51.100.7:5123, 10.0.0.5"), &proxies), ip("198.51.100.7"));
    assert_eq!(forwarded_for(&list("[2001:db8::1]:443"), &proxies), ip("2001:db8::1"));
    // Garbage next to the proxy: nothing further left is believed.
    assert_eq!(forwarded_for(&list("6.6.6.6, unknown, 10.0.0.5"), &proxies), None);
    assert_eq!(forwarded_for(&list("10.0.0.5"), &proxies), None);
}
