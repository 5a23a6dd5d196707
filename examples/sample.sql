-- A small shop with a variety of MariaDB types and objects, for the quickstart.
SET SESSION sql_mode='';
CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE shop;

CREATE TABLE customers (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(80) NOT NULL,
  email VARCHAR(120),
  country CHAR(2) CHARACTER SET ascii,
  tier ENUM('free','pro','enterprise') NOT NULL DEFAULT 'free',
  flags SET('newsletter','beta','vip'),
  signed_up DATETIME(3),
  last_login TIMESTAMP(6) NULL DEFAULT NULL,
  profile JSON,
  client_ip INET6,
  external_id UUID,
  KEY k_country (country)
);
INSERT INTO customers (name, email, country, tier, flags, signed_up, last_login, profile, client_ip, external_id)
SELECT CONCAT('Customer ', seq, IF(seq % 7 = 0, ' 😀', ''), IF(seq % 11 = 0, ' Müller', '')),
       CONCAT('c', seq, '@example.com'),
       ELT(1 + seq % 5, 'DE', 'FR', 'US', 'JP', 'BR'),
       ELT(1 + seq % 3, 'free', 'pro', 'enterprise'),
       ELT(1 + seq % 4, '', 'newsletter', 'beta,vip', 'newsletter,vip'),
       '2020-01-01' + INTERVAL seq MINUTE + INTERVAL seq % 1000 MICROSECOND * 1000,
       IF(seq % 5 = 0, NULL, '2024-06-01 12:00:00' + INTERVAL seq SECOND),
       JSON_OBJECT('seq', seq, 'tags', JSON_ARRAY('a', seq % 3)),
       CONCAT('2001:db8::', HEX(seq)),
       UUID()
FROM seq_1_to_20000;

CREATE TABLE products (
  sku VARCHAR(20) NOT NULL PRIMARY KEY,
  title VARCHAR(200) NOT NULL,
  price DECIMAL(12,2) NOT NULL,
  weight_kg FLOAT,
  rating DOUBLE,
  in_stock BIT(1) NOT NULL DEFAULT b'1',
  launched YEAR,
  image MEDIUMBLOB,
  warehouse POINT REF_SYSTEM_ID=4326
);
INSERT INTO products
SELECT CONCAT('SKU-', LPAD(seq, 6, '0')), CONCAT('Product «', seq, '»'), seq * 1.25 + 0.99,
       seq / 3, 1 + (seq % 50) / 10, seq % 9 <> 0, 1990 + seq % 35,
       IF(seq % 100 = 0, RANDOM_BYTES(1024), NULL), ST_PointFromText(CONCAT('POINT(', seq % 90, ' ', seq % 180, ')'), 4326)
FROM seq_1_to_2000;

CREATE TABLE orders (
  id BIGINT NOT NULL PRIMARY KEY,
  customer_id INT UNSIGNED NOT NULL,
  ordered_on DATE NOT NULL,
  ship_window TIME,
  total DECIMAL(14,2) NOT NULL,
  status ENUM('new','paid','shipped','cancelled') NOT NULL,
  note TEXT,
  KEY k_customer (customer_id),
  KEY k_date (ordered_on)
);
INSERT INTO orders
SELECT seq, 1 + seq % 20000, '2023-01-01' + INTERVAL seq % 700 DAY, SEC_TO_TIME(CAST(seq % 200 AS SIGNED) * 3600 - 360000),
       (seq % 997) * 3.17, ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'),
       IF(seq % 13 = 0, CONCAT('gift\twrap\n', seq), NULL)
FROM seq_1_to_60000;

CREATE TABLE price_history (sku VARCHAR(20) NOT NULL PRIMARY KEY, price DECIMAL(12,2)) WITH SYSTEM VERSIONING;
INSERT INTO price_history SELECT sku, price FROM products WHERE sku <= 'SKU-000100';
UPDATE price_history SET price = price * 1.1 WHERE sku <= 'SKU-000050';

CREATE SEQUENCE invoice_no START WITH 1000 INCREMENT BY 1;
SELECT NEXTVAL(invoice_no);

CREATE VIEW revenue_by_status AS SELECT status, COUNT(*) AS n, SUM(total) AS revenue FROM orders GROUP BY status;
CREATE TRIGGER orders_total_check BEFORE INSERT ON orders FOR EACH ROW SET NEW.total = GREATEST(NEW.total, 0);
CREATE PROCEDURE top_customers(IN n INT)
  SELECT customer_id, SUM(total) AS spent FROM orders GROUP BY customer_id ORDER BY spent DESC LIMIT n;
