mod common;
mod http;
mod loops;
mod tcp_client;
mod tcp_server;
mod udp;
