mod common;
mod http;
mod tcp_client;
mod tcp_server;
mod udp;
