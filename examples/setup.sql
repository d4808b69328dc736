-- The tables examples/mirrors.yaml mirrors, with a few rows. Run it in database `shop` as
-- the role the example's source connects as (it must own the tables: cdc sets REPLICA
-- IDENTITY FULL where needed and Debezium keeps its publication's table list):
--
--   CREATE ROLE shop_cdc LOGIN REPLICATION PASSWORD '...';   -- as a superuser, once
--   CREATE DATABASE shop OWNER shop_cdc;
--   psql 'postgresql://shop_cdc@127.0.0.1:5433/shop' -f examples/setup.sql
--
-- tests/integration/test_apply.py does exactly this before it applies the example.

CREATE TABLE IF NOT EXISTS public.customers (
    id          bigint PRIMARY KEY,
    name        text NOT NULL,
    email       text,
    notes       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.orders (
    id           bigint PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES public.customers (id),
    status       text NOT NULL,
    amount       numeric(12, 2) NOT NULL,
    placed_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.order_lines (
    order_id  bigint NOT NULL REFERENCES public.orders (id),
    line_no   integer NOT NULL,
    sku       text NOT NULL,
    qty       integer NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

INSERT INTO public.customers (id, name, email, notes)
SELECT g, 'customer ' || g, 'c' || g || '@example.com', CASE WHEN g % 3 = 0 THEN 'vip' END
FROM generate_series(1, 50) g
ON CONFLICT (id) DO NOTHING;

INSERT INTO public.orders (id, customer_id, status, amount)
SELECT g, 1 + g % 50, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3], round((g * 7.31)::numeric % 500, 2)
FROM generate_series(1, 200) g
ON CONFLICT (id) DO NOTHING;

INSERT INTO public.order_lines (order_id, line_no, sku, qty)
SELECT o, l, 'sku-' || (o * 10 + l) % 97, 1 + (o + l) % 4
FROM generate_series(1, 200) o, generate_series(1, 3) l
ON CONFLICT (order_id, line_no) DO NOTHING;
