mod common;
mod http;
mod limits;
mod tcp_client;
mod tcp_server;
mod tls;
mod udp;
