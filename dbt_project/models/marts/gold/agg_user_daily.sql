-- depends_on: {{ ref('int_user_home_countries_daily') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['user_id', 'event_date'],
        full_refresh=full_refresh_on_replay(),
        post_hook="{{ record_gold_watermark(ref('fct_transactions'), none) }}",
    )
}}
{%- set since = gold_watermarks() %}
with

{% if since is not none %}

-- incremental: a transaction on day D can move the user's home country for every later day,
-- so each user with new transactions is recomputed from the earliest of their new days on
touched_users as (

    select user_id, min(event_date) as from_date
    from {{ ref('fct_transactions') }}
    where ingested_at > {{ since.transactions }}
    group by user_id

),

{% endif %}

transactions as (

    select fct.* from {{ ref('fct_transactions') }} as fct
    {% if since is not none %}
    inner join touched_users
        on fct.user_id = touched_users.user_id and fct.event_date >= touched_users.from_date
    {% endif %}

),

{% if since is not none %}

-- their home countries need all of their earlier days, but nobody else's
touched_users_transactions as (

    select fct.* from {{ ref('fct_transactions') }} as fct
    semi join touched_users on fct.user_id = touched_users.user_id

),

home_countries as (

    select daily.*
    from ({{ user_home_countries_daily('touched_users_transactions') }}) as daily
    inner join touched_users
        on daily.user_id = touched_users.user_id and daily.event_date >= touched_users.from_date

),

{% else %}

home_countries as (

    select * from {{ ref('int_user_home_countries_daily') }}

),

{% endif %}

final as (

    select
        transactions.user_id,
        transactions.event_date,
        count(*) as txn_count,
        -- exact decimal sum: a float sum depends on row order, a replay must not
        cast(sum(cast(transactions.amount as decimal(38, 6))) as double) as amount_sum,
        max(transactions.amount) as amount_max,
        count(distinct transactions.merchant_id) as distinct_merchants,
        count(distinct transactions.country) as distinct_countries,
        -- foreign = not the home country known at the start of the day (point in time)
        count(*) filter (
            where home_countries.home_country is not null
            and transactions.country <> home_countries.home_country
        ) as foreign_txn_count,
        max(home_countries.home_country) as home_country,
        timezone('UTC', cast(transactions.event_date + interval 1 day as timestamp)) as window_end_at

    from transactions
    left join home_countries
        on transactions.user_id = home_countries.user_id
        and transactions.event_date = home_countries.event_date

    group by transactions.user_id, transactions.event_date

)

select * from final
