with

transactions as (

    select * from {{ ref('fct_transactions') }}

),

home_countries as (

    select * from {{ ref('int_user_home_countries_daily') }}

),

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
